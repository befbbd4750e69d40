"""A classifier's confidence in a row: its top-class probability, from the artifact's scores output.

Confidence drift (a model growing unsure on the field's inputs) shows before accuracy can be measured:
labels come late or never. The agent counts it over the manifest's reference.confidence bins; the
compiler writes that reference from the same scores on the reference rows, and only when the scores are
probabilities (rows in [0, 1] summing to 1), so a margin or logit output never masquerades as one.
"""

from __future__ import annotations

import numpy as np

PROBABILITY_TOLERANCE = 1e-3  # float32 softmax rows sum to 1 within ~1e-6; quantized ones within ~1e-3


def top_class(scores: np.ndarray | None) -> np.ndarray | None:
    """Each row's largest score, clipped to [0, 1] (float64), or None without scores."""
    if scores is None or scores.ndim != 2 or scores.shape[1] == 0:
        return None
    return np.clip(scores.max(axis=1).astype(np.float64), 0.0, 1.0)


def are_probabilities(scores: np.ndarray | None) -> bool:
    """True when every row is a probability vector (finite, within [0, 1], summing to 1)."""
    if scores is None or scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] < 2:
        return False
    s = np.asarray(scores, dtype=np.float64)
    tol = PROBABILITY_TOLERANCE
    return bool(
        np.isfinite(s).all() and (s >= -tol).all() and (s <= 1 + tol).all() and (np.abs(s.sum(axis=1) - 1) <= tol).all()
    )
