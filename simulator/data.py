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
    own gaussian noise (`noise`, in units of each feature's std) so no two devices see the same rows.

    `class_weights` (label as text -> relative weight, unnamed labels 1) shifts the class prior: label
    shift, the inputs of each class unchanged but some classes seen more often."""

    X: np.ndarray
    y: np.ndarray
    seed: int = 0
    drift: Drift = field(default_factory=Drift)
    noise: float = 0.0
    class_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y) or len(self.X) == 0:
            raise ValueError(f"X and y must be non-empty and of equal length, got {len(self.X)} and {len(self.y)}")
        self._rng = np.random.default_rng(self.seed)
        self._std = np.where(self.X.std(axis=0) > 0, self.X.std(axis=0), 1.0)
        self._labels = np.array([str(v) for v in self.y])
        self._weights_for: dict[str, float] = {}
        self._p: np.ndarray | None = None

    def _row_probabilities(self) -> np.ndarray | None:
        """Each row's chance of being drawn under class_weights (None: all alike); kept until they change."""
        if not self.class_weights:
            return None
        if self._p is None or self._weights_for != self.class_weights:
            # each class as often as the held-out set has it, times its weight
            w = np.array([self.class_weights.get(c, 1.0) for c in self._labels.tolist()])
            if w.sum() <= 0:
                raise ValueError(f"class weights {self.class_weights} leave no class to draw")
            self._p, self._weights_for = w / w.sum(), dict(self.class_weights)
        return self._p

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        p = self._row_probabilities()
        idx = self._rng.integers(0, len(self.X), size=n) if p is None else self._rng.choice(len(self.X), size=n, p=p)
        X = self.X[idx].astype(np.float32)
        if self.noise > 0:
            X = (X + self._rng.normal(0.0, self.noise, X.shape) * self._std).astype(np.float32)
        X = self.drift.apply(X, self._std).astype(np.float32)
        return X, self.y[idx]

    def rows(self, n: int) -> Iterator[tuple[np.ndarray, object]]:
        X, y = self.batch(n)
        for i in range(n):
            yield X[i : i + 1], y[i]
