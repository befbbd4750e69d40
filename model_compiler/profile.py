"""The reference profile a device compares its live inputs and predictions against (drift monitoring).

Per feature: up to `n_bins` quantile bins with unique edges (a constant feature gets one bin), and the
count of reference rows in each. Predictions: counts per class label (classifiers) or a `n_bins`
equal-width histogram (regressors). Binning rule, shared with the agent (see protocols/MANIFEST.md):
    bin = searchsorted(edges[1:-1], x, side="right")
so values below the first edge land in bin 0, values above the last edge in the last bin, and NaN
(a missing value) is not counted.
"""

from __future__ import annotations

import numpy as np

from protocols.v1 import messages_pb2 as pb

DEFAULT_BINS = 10


def bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The bin of each (non-NaN) value; the rule devices apply to live data."""
    return np.searchsorted(np.asarray(edges)[1:-1], values, side="right")


def feature_edges(column: np.ndarray, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    finite = column[np.isfinite(column)]
    if finite.size == 0:
        return np.array([0.0, 0.0])
    edges = np.unique(np.quantile(finite.astype(np.float64), np.linspace(0.0, 1.0, n_bins + 1)))
    if edges.size < 2:  # constant: one bin [v, v]
        return np.array([edges[0], edges[0]])
    return edges


def _counts(edges: np.ndarray, values: np.ndarray) -> list[int]:
    values = values[np.isfinite(values)]
    return np.bincount(bin_index(edges, values), minlength=len(edges) - 1).astype(int).tolist()


def reference_profile(
    x: np.ndarray,
    predictions: list[str] | np.ndarray,
    *,
    class_labels: list[str],
    feature_names: list[str],
    n_bins: int = DEFAULT_BINS,
) -> pb.ReferenceProfile:
    """Profile of reference inputs `x` and the source model's predictions on them."""
    x = np.asarray(x, dtype=np.float64)
    profile = pb.ReferenceProfile(n_rows=x.shape[0])
    for j in range(x.shape[1]):
        edges = feature_edges(x[:, j], n_bins)
        profile.features.add(
            index=j,
            name=feature_names[j] if j < len(feature_names) else "",
            bin_edges=edges.tolist(),
            counts=_counts(edges, x[:, j]),
        )
    if class_labels:
        seen = np.asarray(predictions, dtype=object)
        profile.predictions.labels.extend(class_labels)
        profile.predictions.counts.extend(int(np.sum(seen == label)) for label in class_labels)
    else:
        values = np.asarray(predictions, dtype=np.float64).reshape(x.shape[0], -1)[:, 0]
        finite = values[np.isfinite(values)]
        if finite.size:
            edges = np.histogram_bin_edges(finite, bins=n_bins)
            profile.predictions.bin_edges.extend(edges.tolist())
            profile.predictions.counts.extend(_counts(edges, values))
    return profile
