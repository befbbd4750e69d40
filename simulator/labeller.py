"""Ground truth for what simulated devices inferred on: the annotator a real deployment would have.

A `LabelledStream` remembers the true label of every row it hands a device, keyed by the row's float32
bytes; `Annotator.label` answers, for sampled predictions the cloud holds (device, prediction id, input),
the truth of each one it recognises. The devices never see these labels: they come back to the cloud
later, through its feedback path, as a labelling team's would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from simulator.data import DataStream


@dataclass
class LabelledStream(DataStream):
    truth: dict[bytes, str] = field(default_factory=dict, repr=False)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        X, y = super().batch(n)
        for row, label in zip(X, y, strict=True):
            self.truth[row.astype(np.float32).tobytes()] = str(label)
        return X, y


@dataclass(frozen=True)
class SampledPrediction:
    device_id: str
    prediction_id: str
    input: Sequence[float]


class Annotator:
    def __init__(self, streams: Mapping[str, LabelledStream]) -> None:
        self._streams = streams

    def label(self, samples: Iterable[SampledPrediction]) -> list[dict[str, str]]:
        """FeedbackItem-shaped labels for the samples whose rows this device's stream handed out."""
        labels = []
        for s in samples:
            stream = self._streams.get(s.device_id)
            truth = stream.truth.get(np.asarray(s.input, dtype=np.float32).tobytes()) if stream else None
            if truth is not None:
                labels.append({"device_id": s.device_id, "prediction_id": s.prediction_id, "label": truth})
        return labels
