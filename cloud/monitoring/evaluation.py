"""What an alert tick reads: the alerts that hold now and the sampler hints they call for (reads only).

The alert monitor (cloud.monitoring.alert_monitor) asks an `Evaluator` for it: `InProcess` reads on the
caller's thread; cloud.monitoring.alert_process.AlertProcess in a process of its own (what `edgefleet up`
runs), so that the evaluation never holds the core's interpreter lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine
from sqlmodel import Session

from cloud.db.engine import read_only
from cloud.monitoring import alerts, hints


@dataclass(frozen=True)
class Evaluation:
    found: list[alerts.Alert]
    hints: dict[str, tuple[hints.pb.ModelRef, hints.Bins]] | None  # None: not asked for


def evaluate(engine: Engine, policy: alerts.AlertPolicy, now_ms: int, with_hints: bool) -> Evaluation:
    # only reads: on SQLite a read-only session takes no write lock, so ingestion goes on meanwhile
    with Session(read_only(engine)) as session:
        found = alerts.evaluate(session, policy, clock=lambda: now_ms)
        wanted = None
        if with_hints:
            wanted = hints.wanted_hints(session, found, now_ms - policy.drift_lookback_s * 1000)
    return Evaluation(found, wanted)


class Evaluator(Protocol):
    @property
    def restarts(self) -> int:
        """Of its process, after the first start (0 with none)."""
        ...

    def evaluate(self, policy: alerts.AlertPolicy, now_ms: int, with_hints: bool) -> Evaluation: ...

    def close(self) -> None: ...


class InProcess:
    """The evaluation on the caller's thread (CloudService's default, and the tests')."""

    restarts = 0

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def evaluate(self, policy: alerts.AlertPolicy, now_ms: int, with_hints: bool) -> Evaluation:
        return evaluate(self.engine, policy, now_ms, with_hints)

    def close(self) -> None:
        pass
