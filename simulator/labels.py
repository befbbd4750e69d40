"""Delayed label feedback for simulated devices: the truth about a prediction arrives some time after it.

A device whose group has `label_delay_s` predicts without a label. Its sampled predictions leave in a
SampleBatch (each named "{batch seq}:{position}" by the cloud, as the sample carries no id of its own);
`DelayedLabels.sampled` sees that batch on its way out (through the device's transport, see
simulator.faults), looks up each sampled row's true label, and queues a `pb.Feedback` for it due
`label_delay_s` after the prediction. `due(now)` hands out what has come due, per device, as the
FeedbackBatch the device then publishes on its feedback topic (over its own, possibly shaped, link).
Only a share (`labelled`) of the sampled predictions ever gets its label, as in the field.

Rows are recognised by their float32 bytes; each device remembers its last `MEMORY_ROWS` predictions.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import OrderedDict

import numpy as np

from protocols import SCHEMA_VERSION
from protocols.v1 import messages_pb2 as pb

__all__ = ["DelayedLabels"]

MEMORY_ROWS = 4096  # per device: more than a telemetry window's predictions at any rate a scenario allows


class DelayedLabels:
    def __init__(self, delay_s: dict[str, float], labelled: dict[str, float], *, seed: int = 0) -> None:
        """delay_s / labelled: per device that gets delayed labels, the delay and the share labelled."""
        self._delay_s, self._labelled = delay_s, labelled
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._truth: dict[str, OrderedDict[bytes, tuple[str, float]]] = {d: OrderedDict() for d in delay_s}
        self._queue: list[tuple[float, str, str, str]] = []  # (due, device, prediction id, label)
        self._seq: dict[str, int] = {}
        self.sampled_rows = 0
        self.unmatched = 0  # sampled rows whose prediction was no longer remembered
        self.queued = 0
        self.delivered = 0

    def delays(self, device_id: str) -> bool:
        return device_id in self._delay_s

    def predicted(self, device_id: str, row: np.ndarray, label: str, at: float | None = None) -> None:
        """Remember the truth of a prediction the device made without a label (at: time.monotonic())."""
        memory, key = self._truth[device_id], np.ascontiguousarray(row, dtype=np.float32).tobytes()
        with self._lock:
            memory[key] = (label, time.monotonic() if at is None else at)
            if len(memory) > MEMORY_ROWS:
                memory.popitem(last=False)

    def sampled(self, device_id: str, batch: pb.SampleBatch) -> None:
        """A sample batch the device is sending: queue the labels its rows will get."""
        if device_id not in self._delay_s:
            return
        with self._lock:
            memory = self._truth[device_id]
            for position, sample in enumerate(batch.samples):
                self.sampled_rows += 1
                truth = memory.get(np.asarray(sample.input, dtype=np.float32).tobytes())
                if truth is None:
                    self.unmatched += 1
                    continue
                if self._rng.random() >= self._labelled[device_id]:
                    continue
                label, at = truth
                prediction_id = sample.prediction_id or f"{batch.seq}:{position}"
                heapq.heappush(self._queue, (at + self._delay_s[device_id], device_id, prediction_id, label))
                self.queued += 1

    def due(self, now: float | None = None) -> dict[str, pb.FeedbackBatch]:
        """The labels that have come due, one FeedbackBatch per device."""
        now = time.monotonic() if now is None else now
        wall_ms = int(time.time() * 1000)
        batches: dict[str, pb.FeedbackBatch] = {}
        with self._lock:
            while self._queue and self._queue[0][0] <= now:
                _due, device_id, prediction_id, label = heapq.heappop(self._queue)
                batch = batches.get(device_id)
                if batch is None:
                    seq = self._seq[device_id] = self._seq.get(device_id, 0) + 1
                    batch = batches[device_id] = pb.FeedbackBatch(
                        schema_version=SCHEMA_VERSION, device_id=device_id, seq=seq
                    )
                batch.items.append(pb.Feedback(prediction_id=prediction_id, label=label, ts_ms=wall_ms))
                self.delivered += 1
        return batches

    @property
    def owed(self) -> int:
        """Labels queued that have not come due yet."""
        with self._lock:
            return len(self._queue)
