"""Drift statistics over binned counts (pure functions; numpy only).

Devices send, per telemetry window, how many inputs fell in each of the reference profile's bins for each
feature (the compiler fixed the bins at training time). Counts merge by summation, so fleet-wide drift
needs no raw data. Per feature we compare the observed counts with the reference counts:

    psi          Population Stability Index, sum((q - p) * ln(q / p)), bins floored at `eps`
                 (< 0.1 stable, 0.1-0.25 moderate shift, >= 0.25 significant: the industry rule of thumb)
    js_distance  Jensen-Shannon distance, base 2, in [0, 1]; symmetric and finite even with empty bins
    chi-square   goodness of fit of the observed counts to the reference proportions, with its p-value;
                 p-values across features are controlled with Benjamini-Hochberg (false discovery rate)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_EPS = 1e-4
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25

Counts = Sequence[float] | np.ndarray


def _proportions(counts: Counts, eps: float) -> np.ndarray:
    arr = np.asarray(counts, dtype=float)
    if arr.ndim != 1 or (arr < 0).any():
        raise ValueError("counts must be a 1-d sequence of non-negative numbers")
    total = arr.sum()
    if total <= 0:
        raise ValueError("counts sum to zero")
    return np.maximum(arr / total, eps)


def _check_pair(reference: Counts, observed: Counts) -> None:
    if len(reference) != len(observed):
        raise ValueError(f"bin count mismatch: reference has {len(reference)}, observed {len(observed)}")


def psi(reference: Counts, observed: Counts, eps: float = DEFAULT_EPS) -> float:
    _check_pair(reference, observed)
    p, q = _proportions(reference, eps), _proportions(observed, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: Counts, observed: Counts) -> float:
    _check_pair(reference, observed)
    p, q = _proportions(reference, 0.0), _proportions(observed, 0.0)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    divergence = max(0.0, (kl(p) + kl(q)) / 2)
    return math.sqrt(min(divergence, 1.0))


def chi_square(reference: Counts, observed: Counts, eps: float = DEFAULT_EPS) -> tuple[float, float]:
    """(statistic, p-value) of observed counts against the reference proportions (df = bins - 1)."""
    from scipy.special import chdtrc  # scipy comes with scikit-learn; imported here to keep drift import-light

    _check_pair(reference, observed)
    obs = np.asarray(observed, dtype=float)
    expected = _proportions(reference, eps) * obs.sum()
    statistic = float(np.sum((obs - expected) ** 2 / expected))
    dof = max(len(obs) - 1, 1)
    return statistic, float(chdtrc(dof, statistic))


def benjamini_hochberg(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Which hypotheses to reject keeping the false discovery rate at alpha (order preserved)."""
    n = len(p_values)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: p_values[i])
    cutoff = -1
    for rank, i in enumerate(order, start=1):
        if p_values[i] <= alpha * rank / n:
            cutoff = rank
    rejected = [False] * n
    for rank, i in enumerate(order, start=1):
        rejected[i] = rank <= cutoff
    return rejected


def merge_counts(sketches: Iterable[Mapping[int, Counts]]) -> dict[int, list[int]]:
    """Sum per-feature bin counts over windows or devices. A feature whose bin count changes between
    sketches is a contract violation: raise rather than mix incompatible bins."""
    merged: dict[int, np.ndarray] = {}
    for sketch in sketches:
        for index, counts in sketch.items():
            arr = np.asarray(counts, dtype=np.int64)
            key = int(index)
            if key not in merged:
                merged[key] = arr.copy()
            elif len(merged[key]) != len(arr):
                raise ValueError(f"feature {key}: {len(arr)} bins, earlier sketches had {len(merged[key])}")
            else:
                merged[key] += arr
    return {k: v.tolist() for k, v in sorted(merged.items())}


def psi_level(value: float) -> str:
    if value >= PSI_SIGNIFICANT:
        return "significant"
    return "moderate" if value >= PSI_MODERATE else "stable"


@dataclass(frozen=True)
class FeatureDrift:
    index: int
    name: str
    n_observed: int
    psi: float | None  # None: nothing observed for this feature
    js_distance: float | None
    chi_square: float | None
    p_value: float | None
    level: str  # stable | moderate | significant | no_data
    drifted: bool  # significant PSI, or moderate PSI with chi-square rejected under Benjamini-Hochberg


@dataclass(frozen=True)
class ReferenceFeature:
    index: int
    name: str
    counts: Sequence[float]


def feature_drift(
    reference: Sequence[ReferenceFeature], observed: Mapping[int, Counts], *, alpha: float = 0.05
) -> list[FeatureDrift]:
    """Per-feature drift of observed counts against the reference profile."""
    measured: dict[int, tuple[float, float, float, float]] = {}  # index -> psi, js, chi-square, p-value
    sizes: dict[int, int] = {}
    for ref in reference:
        obs = observed.get(ref.index)
        sizes[ref.index] = int(np.sum(obs)) if obs is not None else 0
        if obs is not None and sizes[ref.index] > 0 and sum(ref.counts) > 0:
            stat, p = chi_square(ref.counts, obs)
            measured[ref.index] = (psi(ref.counts, obs), js_distance(ref.counts, obs), stat, p)
    verdicts = benjamini_hochberg([m[3] for m in measured.values()], alpha)
    rejected = dict(zip(measured, verdicts, strict=True))
    results = []
    for ref in reference:
        if ref.index not in measured:
            n = sizes[ref.index]
            results.append(FeatureDrift(ref.index, ref.name, n, None, None, None, None, "no_data", drifted=False))
            continue
        value, js, stat, p = measured[ref.index]
        level = psi_level(value)
        # chi-square alone flags negligible shifts once counts are large: require a moderate PSI with it
        drifted = level == "significant" or (level == "moderate" and rejected[ref.index])
        results.append(FeatureDrift(ref.index, ref.name, sizes[ref.index], value, js, stat, p, level, drifted))
    return results

def align_labelled(
    reference_labels: Sequence[str], reference_counts: Counts, observed_labels: Sequence[str], observed_counts: Counts
) -> tuple[list[float], list[float]]:
    """Put two label->count histograms on the reference's label order (labels only observed go last)."""
    if len(reference_labels) != len(reference_counts) or len(observed_labels) != len(observed_counts):
        raise ValueError("each label needs exactly one count")
    observed = dict(zip(observed_labels, (float(c) for c in observed_counts), strict=True))
    ref = [float(c) for c in reference_counts]
    obs = [observed.pop(label, 0.0) for label in reference_labels]
    for extra in observed.values():  # a class the reference never predicted
        ref.append(0.0)
        obs.append(extra)
    return ref, obs


@dataclass(frozen=True)
class PredictionDrift:
    n_observed: int
    psi: float | None
    js_distance: float | None
    level: str


def prediction_drift(reference: Counts, observed: Counts) -> PredictionDrift:
    """Shift of the prediction histogram (labels aligned by `align_labelled`, or regression bins)."""
    n = int(np.sum(observed)) if len(observed) else 0
    if n == 0 or len(reference) == 0 or float(np.sum(reference)) <= 0:
        return PredictionDrift(n, None, None, "no_data")
    value = psi(reference, observed)
    return PredictionDrift(n, value, js_distance(reference, observed), psi_level(value))
