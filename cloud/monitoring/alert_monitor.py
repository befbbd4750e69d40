"""The alert monitor: a periodic worker that evaluates drift and accuracy alerts (cloud.monitoring.alerts),
records them, and hands each raise and clear it won to the webhook (if one is configured).

It runs on its own thread and only reads telemetry that ingestion already committed, so a slow evaluation
or a dead webhook receiver never holds up ingestion (the webhook's queue is bounded and never waited on).
The reading (the alerts that hold, the hints they call for) is asked of an evaluator
(cloud.monitoring.evaluation): on this thread by default, or in a process of its own
(cloud.monitoring.alert_process, what `edgefleet up` runs) so it never holds this interpreter's lock;
recording, the webhook and the hints stay here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session

from cloud.monitoring import alerts, hints
from cloud.monitoring.evaluation import Evaluator, InProcess
from cloud.monitoring.webhook import WebhookSender
from cloud.mqtt.worker import Counters
from cloud.periodic import Periodic
from cloud.types import ClockMs, now_ms

log = logging.getLogger(__name__)


@dataclass
class AlertStats(Counters):
    evaluations: int = 0
    raised: int = 0
    cleared: int = 0
    hints_sent: int = 0  # sampler hints (and clears) sent to devices


class AlertMonitor(Periodic):
    name = "edgefleet-alerts"

    def __init__(
        self, engine: Engine, policy: alerts.AlertPolicy = alerts.DEFAULT_POLICY, *, interval_s: float = 60.0,
        webhook: WebhookSender | None = None, clock: ClockMs = now_ms, hinter: hints.SamplerHinter | None = None,
        evaluator: Evaluator | None = None,
    ) -> None:  # fmt: skip
        self.engine = engine
        self.evaluator = evaluator or InProcess(engine)
        self.policy = policy
        self.interval_s = interval_s
        self.webhook = webhook
        self.clock = clock
        self.hinter = hinter  # sends drift alerts' devices their sampler hints (None: no hints)
        self.stats = AlertStats()
        self._closing = False

    def tick(self) -> list[alerts.Transition]:
        # the evaluation (seconds, on a big fleet) only reads; only the few rows it changes are written,
        # briefly, after
        try:
            evaluation = self.evaluator.evaluate(self.policy, self.clock(), self.hinter is not None)
        except Exception:
            if self._closing:  # stop() ended its process under it: nothing to report
                return []
            raise
        with Session(self.engine) as session:
            transitions = alerts.apply(session, evaluation.found, clock=self.clock)
            session.commit()
        self.stats.add(
            evaluations=1,
            raised=sum(t.event == "alert.raised" for t in transitions),
            cleared=sum(t.event == "alert.cleared" for t in transitions),
        )
        for t in transitions:
            log.warning("%s: %s", t.event, t.alert["summary"] or t.alert["key"])
            if self.webhook is not None:
                self.webhook.send(t.event, {"alert": t.alert})
        if self.hinter is not None and evaluation.hints is not None:
            self.stats.add(hints_sent=len(self.hinter.update(evaluation.hints)))
        return transitions

    def stop(self) -> None:
        self._closing = True
        self.evaluator.close()  # first: a tick waiting on its process ends at once
        super().stop()
        if self.webhook is not None:
            self.webhook.stop()

    def counters(self) -> dict[str, int]:
        """This process's alert and webhook counters (for /metrics)."""
        figures = self.stats.snapshot()
        figures["process_restarts"] = self.evaluator.restarts
        if self.webhook is not None:
            figures.update({f"webhook_{k}": v for k, v in self.webhook.stats.snapshot().items()})
        return figures
