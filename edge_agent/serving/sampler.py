"""A budgeted share of live inputs, with their predictions, for retraining -> pb.SampleBatch.

Each row is kept with probability `rate`, and at most `max_per_window` rows are kept per window, so the
uplink cost is bounded whatever the inference rate. Rather than a draw per row, the gap to the next kept row
is drawn (geometric: the same odds), so a call that keeps nothing costs a subtraction.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_agent.serving.slot import ServingModel
from edge_agent.serving.telemetry import prediction_strings
from protocols import SCHEMA_VERSION
from protocols.v1 import messages_pb2 as pb


class Sampler:
    def __init__(self, rate: float, max_per_window: int, rng: random.Random | None = None) -> None:
        self.rate = rate
        self.max_per_window = max_per_window
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._samples: list[pb.Sample] = []
        self._model: pb.ModelRef | None = None
        self._skip = self._gap()  # rows to pass over before the next kept one

    def _gap(self) -> int:
        if self.rate >= 1:
            return 0
        if self.rate <= 0:
            return 1 << 62
        return int(math.log(1.0 - self._rng.random()) / math.log(1.0 - self.rate))

    def offer(
        self, serving: ServingModel, x: np.ndarray, prediction: Any, label: str | None, now_ms: Callable[[], int]
    ) -> None:
        """Maybe keep some rows of this call. The prediction's strings and the time are worked out only
        for a row that is kept: most calls keep none, and should cost next to nothing."""
        rows = x.shape[0]
        if self._skip >= rows or self.max_per_window <= 0:
            self._skip -= rows  # unlocked: a race only shifts which row is kept next, never the odds much
            return
        with self._lock:
            room = self.max_per_window - len(self._samples)
            picked: list[int] = []
            while self._skip < rows and len(picked) < room:
                picked.append(max(self._skip, 0))
                self._skip += 1 + self._gap()
            # the window's budget spent: no more draws until drain() opens the next one
            self._skip = 1 << 62 if len(picked) == room else self._skip - rows
            if not picked:
                return
            strings, ts_ms = prediction_strings(prediction), now_ms()
            self._model = serving.ref
            for i in picked:
                self._samples.append(
                    pb.Sample(
                        input=x[i].astype(np.float32).tolist(),
                        prediction=strings[i],
                        label=label if label is not None and len(x) == 1 else "",
                        ts_ms=ts_ms,
                    )
                )

    def drain(self, device_id: str, seq: int) -> pb.SampleBatch | None:
        """The samples of the window now ending (None if there are none); the budget starts again."""
        with self._lock:
            samples, self._samples = self._samples, []
            model, self._model = self._model, None
            self._skip = self._gap()
        if not samples:
            return None
        batch = pb.SampleBatch(schema_version=SCHEMA_VERSION, device_id=device_id, seq=seq, samples=samples)
        if model is not None:
            batch.model.CopyFrom(model)
        return batch
