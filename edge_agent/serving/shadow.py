"""The previous model during a probation: kept loaded (to roll back to with a slot swap) and shadowed.

A sampled share (`rate`) of the calls the new model answers is also run through the previous model, on
one worker thread fed by a small bounded queue: `offer` (on the caller's thread, after the answer is
ready) only draws a random number and does a non-blocking put, so shadowing never adds a model's latency
to an answer. When the queue is full the rows are dropped and counted. Each shadowed row counts as
compared, and as agreed when both models give the same top label (regressors: the first value within
`tolerance`, relative and absolute). The figures go to the telemetry window (`record`), whence to the
cloud's `shadow_agreement` gate.

Memory: while a probation runs two models are resident; `probation_s = 0` lets the previous one go at
activation (no shadowing, no local rollback).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from edge_agent.serving.columns import recoder
from edge_agent.serving.slot import ServingModel

log = logging.getLogger(__name__)

RecordFn = Callable[[int, int, int], None]  # (compared, agreed, dropped)


class ShadowSettings(Protocol):  # what KeptModel reads of the agent's settings
    @property
    def shadow_rate(self) -> float: ...

    @property
    def shadow_tolerance(self) -> float: ...
QUEUE_SIZE = 32  # shadow calls waiting; more are dropped (and counted)
_STOP = None


def agreement(new: Any, old: Any, tolerance: float) -> tuple[int, int]:
    """(compared, agreed) over the rows both predictions answer."""
    if new.labels is not None and old.labels is not None:
        pairs = list(zip(new.labels, old.labels, strict=False))
        return len(pairs), sum(str(a) == str(b) for a, b in pairs)
    if new.values is None or old.values is None:
        return 0, 0
    a, b = (np.asarray(v, dtype=np.float64) for v in (new.values, old.values))
    a, b = (v[:, 0] if v.ndim > 1 else v.reshape(-1) for v in (a, b))
    n = min(len(a), len(b))
    return n, int(np.isclose(a[:n], b[:n], rtol=tolerance, atol=tolerance).sum())


class Shadow:
    """Shadows `new`'s calls through `previous` on its own thread until `stop()`."""

    def __init__(
        self,
        previous: ServingModel,
        new: ServingModel,
        *,
        rate: float,
        record: RecordFn,
        rng: random.Random,
        tolerance: float = 1e-3,
        queue_size: int = QUEUE_SIZE,
        name: str = "edgefleet-shadow",
    ) -> None:
        self.previous, self.new = previous, new
        # rows come encoded for the new model's named columns; the previous one may know other categories
        self._recode = recoder(new.manifest.io.columns, previous.manifest.io.columns)
        if self._recode is None:  # it needs a column the new model is not sent: nothing to compare
            rate = 0.0
        self._rate, self._record, self._rng, self._tolerance = rate, record, rng, tolerance
        self._queue: queue.Queue[tuple[np.ndarray, Any] | None] = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopped = threading.Event()
        if rate > 0:
            self._thread.start()

    def offer(self, serving: ServingModel, rows: np.ndarray, prediction: Any) -> None:
        """Maybe shadow a call `serving` answered; never blocks."""
        if serving is not self.new or self._rate <= 0 or self._stopped.is_set() or self._rng.random() >= self._rate:
            return
        try:
            self._queue.put_nowait((rows, prediction))
        except queue.Full:
            self._record(0, 0, int(rows.shape[0]))

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop shadowing: queued work is dropped (uncounted), the worker ends."""
        self._stopped.set()
        if not self._thread.is_alive():
            return
        while True:  # make room for the stop marker without blocking
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP and not self._stopped.is_set():
            rows, answered = item
            try:
                assert self._recode is not None
                old = self.previous.model.predict(self._recode(rows))
            except Exception as exc:  # noqa: BLE001 - the previous model's failure is not the answer's
                log.debug("shadow call failed: %s", exc)
                continue
            if not self._stopped.is_set():
                self._record(*agreement(answered, old, self._tolerance), 0)


class KeptModel:
    """The previous model kept loaded while the new one is on probation, with its shadow (thread-safe)."""

    def __init__(self, settings: ShadowSettings, record: RecordFn, rng: random.Random, name: str) -> None:
        self._rate, self._tolerance = settings.shadow_rate, settings.shadow_tolerance
        self._record, self._rng, self._name = record, rng, name
        self._lock = threading.Lock()
        self._shadow: Shadow | None = None
        self._baseline = (0, 0)
        self._shadow_counts = [0, 0]  # (compared, agreed) by the current shadow: the probation's evidence

    @property
    def previous(self) -> ServingModel | None:
        shadow = self._shadow
        return None if shadow is None else shadow.previous

    def keep(self, previous: ServingModel | None, new: ServingModel | None, counts: tuple[int, int]) -> None:
        """Keep `previous` (None: nothing to keep) while `new` serves; `counts` = (inferences, errors) so far."""
        shadow = None
        if previous is not None and new is not None:
            shadow = Shadow(
                previous, new, rate=self._rate, record=self._count, rng=self._rng, tolerance=self._tolerance,
                name=self._name,
            )  # fmt: skip
        with self._lock:
            old, self._shadow, self._baseline = self._shadow, shadow, counts
            self._shadow_counts = [0, 0]
        if old is not None:
            old.stop()

    def release(self) -> ServingModel | None:
        """Stop shadowing and let the previous model go; returns it (to roll back to)."""
        with self._lock:
            shadow, self._shadow = self._shadow, None
        if shadow is None:
            return None
        shadow.stop()
        return shadow.previous

    def offer(self, serving: ServingModel, rows: np.ndarray, prediction: Any) -> None:
        shadow = self._shadow
        if shadow is not None:
            shadow.offer(serving, rows, prediction)

    def since_kept(self, counts: tuple[int, int]) -> tuple[int, int]:
        """(inferences, errors) since the new model began its probation (or this agent started)."""
        return counts[0] - self._baseline[0], counts[1] - self._baseline[1]

    def shadow_since_kept(self) -> tuple[int, int]:
        """(compared, agreed) by the shadow since the new model began its probation (or this agent started)."""
        with self._lock:
            return self._shadow_counts[0], self._shadow_counts[1]

    def _count(self, compared: int, agreed: int, dropped: int) -> None:
        with self._lock:
            self._shadow_counts[0] += compared
            self._shadow_counts[1] += agreed
        self._record(compared, agreed, dropped)
