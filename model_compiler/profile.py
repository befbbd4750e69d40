"""The reference profile a device compares its live inputs and predictions against (drift monitoring).

Per feature: up to `n_bins` quantile bins with unique edges, and the count of reference rows in each. A
feature that is mostly one value (>= MASS_SHARE of the rows, constants included) gets mass-point bins
instead: one bin holding just that value, and quantile bins below and above it (an empty one on a side
with no reference rows), so a shift off or onto the value is still seen; with plain quantile bins such a
feature collapses into a single bin and can never drift. Predictions: counts per class label (classifiers) or a `n_bins`
equal-width histogram (regressors); multilabel models: each label's positive rate instead (`label_rates`).
Binning rule, shared with the agent (see protocols/MANIFEST.md):
    bin = searchsorted(edges[1:-1], x, side="right")
so values below the first edge land in bin 0, values above the last edge in the last bin, and NaN
(a missing value) is not counted.
"""

from __future__ import annotations

import numpy as np

from edge_agent.serving.confidence import are_probabilities, top_class
from protocols.telemetry_bins import CONFIDENCE_EDGES
from protocols.v1 import messages_pb2 as pb

DEFAULT_BINS = 10
MASS_SHARE = 0.5
MIN_SIDE_BINS = 3  # bins on each side of a mass point (fewer when the side has fewer distinct values)


def bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The bin of each (non-NaN) value; the rule devices apply to live data."""
    return np.searchsorted(np.asarray(edges)[1:-1], values, side="right")


def feature_edges(column: np.ndarray, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    finite = column[np.isfinite(column)].astype(np.float64)
    if finite.size == 0:
        return np.array([0.0, 0.0])
    values, counts = np.unique(finite, return_counts=True)
    if counts.max() >= MASS_SHARE * finite.size:
        return _mass_point_edges(finite, float(values[np.argmax(counts)]), n_bins)
    return np.unique(np.quantile(finite, np.linspace(0.0, 1.0, n_bins + 1)))


def _mass_point_edges(finite: np.ndarray, value: float, n_bins: int) -> np.ndarray:
    # devices bin float32 inputs: the value's bin spans its float32 rounding up to the next float32
    as32 = float(np.float32(value))
    low = min(value, as32)
    high = float(np.nextafter(np.float32(max(value, as32)), np.float32(np.inf)))
    below, above = finite[finite < low], finite[finite >= high]

    def side_bins(side: np.ndarray) -> int:
        share = round((n_bins - 1) * side.size / finite.size)
        return max(min(MIN_SIDE_BINS, np.unique(side).size), share, 1)

    if below.size:
        lower = np.quantile(below, np.linspace(0.0, 1.0, side_bins(below) + 1))[:-1]
    else:
        lower = np.array([np.nextafter(low, -np.inf)])
    upper = np.quantile(above, np.linspace(0.0, 1.0, side_bins(above) + 1))[1:] if above.size else np.array([])
    upper = upper[upper > high]
    if upper.size == 0:
        upper = np.array([np.nextafter(high, np.inf)])
    return np.unique(np.concatenate([lower, [low, high], upper]))


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
    categories: dict[int, list[str]] | None = None,
) -> pb.ReferenceProfile:
    """Profile of reference inputs `x` and the source model's predictions on them. A string column
    (`categories[j]`, sent as codes 0..k-1, unknown as k) gets one bin per category and a last one for
    unknown categories: its drift is counts per category."""
    x = np.asarray(x, dtype=np.float64)
    profile = pb.ReferenceProfile(n_rows=x.shape[0])
    for j in range(x.shape[1]):
        cats = (categories or {}).get(j)
        edges = np.arange(len(cats) + 2) - 0.5 if cats is not None else feature_edges(x[:, j], n_bins)
        profile.features.add(
            index=j,
            name=feature_names[j] if j < len(feature_names) else "",
            bin_edges=edges.tolist(),
            counts=_counts(edges, x[:, j]),
            categories=cats or [],
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


def confidence_profile(scores: np.ndarray | None) -> pb.PredictionProfile | None:
    """Rows' top-class probability over CONFIDENCE_EDGES (the artifact's own scores, so
    the reference is what a device computes), or None when the scores are not probabilities."""
    if not are_probabilities(scores):
        return None
    values = top_class(scores)
    assert values is not None
    edges = np.asarray(CONFIDENCE_EDGES, dtype=np.float64)
    return pb.PredictionProfile(bin_edges=CONFIDENCE_EDGES, counts=_counts(edges, values))


def label_rates(probabilities: np.ndarray | None, labels: list[str]) -> pb.LabelRates | None:
    """A multilabel model's rows with each label on (probability > 0.5, as the agent labels a row), from the
    artifact's own per-label probabilities; None when they are not one column per label."""
    if probabilities is None:
        return None
    values = np.asarray(probabilities)
    if values.ndim != 2 or values.shape[1] != len(labels):
        return None
    positives = (values > 0.5).sum(axis=0)
    return pb.LabelRates(labels=labels, positives=positives.astype(int).tolist(), rows=values.shape[0])
