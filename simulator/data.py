"""Data streams for simulated devices: held-out rows with labels, with optional drift injected.

Pure numpy; each device gets its own seeded stream so a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Drift:
    """Shift the chosen features by `shift` (in units of each feature's std) and scale by `scale`."""

    features: tuple[int, ...] = ()
    shift: float = 0.0
    scale: float = 1.0

    def apply(self, X: np.ndarray, std: np.ndarray) -> np.ndarray:
        if not self.features:
            return X
        out = X.copy()
        cols = list(self.features)
        out[:, cols] = out[:, cols] * self.scale + self.shift * std[cols]
        return out


@dataclass
class DataStream:
    """Rows (x, label) drawn with replacement from a held-out set, optionally drifted, with this device's
    own gaussian noise (`noise`, in units of each feature's std) so no two devices see the same rows."""

    X: np.ndarray
    y: np.ndarray
    seed: int = 0
    drift: Drift = field(default_factory=Drift)
    noise: float = 0.0

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y) or len(self.X) == 0:
            raise ValueError(f"X and y must be non-empty and of equal length, got {len(self.X)} and {len(self.y)}")
        self._rng = np.random.default_rng(self.seed)
        self._std = np.where(self.X.std(axis=0) > 0, self.X.std(axis=0), 1.0)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self._rng.integers(0, len(self.X), size=n)
        X = self.X[idx].astype(np.float32)
        if self.noise > 0:
            X = (X + self._rng.normal(0.0, self.noise, X.shape) * self._std).astype(np.float32)
        X = self.drift.apply(X, self._std).astype(np.float32)
        return X, self.y[idx]

    def rows(self, n: int) -> Iterator[tuple[np.ndarray, object]]:
        X, y = self.batch(n)
        for i in range(n):
            yield X[i : i + 1], y[i]
