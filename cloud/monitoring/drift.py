"""What a drift report says per feature and about the predictions, built from the detector's findings
(pure: no I/O). Also the two count helpers reports need: summing sketches and aligning label histograms.

Devices send, per telemetry window, how many inputs fell in each of the reference profile's bins for each
feature (the compiler fixed the bins at training time). Counts merge by summation, so fleet-wide drift
needs no raw data. The statistics are in `cloud.monitoring.stats`, the alert rule in
`cloud.monitoring.detector`. `level` reads the PSI in excess of what sampling noise alone gives at these
sample sizes with the industry rule of thumb (< 0.1 stable, 0.1-0.25 moderate, >= 0.25 significant);
`drifted` is the detector's verdict (significance across the report's family, effect, sample size).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cloud.monitoring.detector import Finding

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25

Counts = Sequence[float] | np.ndarray


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


def psi_level(value: float) -> str:
    if value >= PSI_SIGNIFICANT:
        return "significant"
    return "moderate" if value >= PSI_MODERATE else "stable"


def _level(finding: Finding) -> str:
    excess = finding.excess_psi
    return "no_data" if excess is None else psi_level(excess)


@dataclass(frozen=True)
class ReferenceFeature:
    index: int
    name: str
    counts: Sequence[float]


@dataclass(frozen=True)
class FeatureDrift:
    index: int
    name: str
    n_observed: int
    psi: float | None  # None: nothing observed for this feature
    js_distance: float | None
    chi_square: float | None  # two-sample, against the reference rows
    p_value: float | None  # None: not tested (fewer rows than the policy's minimum)
    level: str  # stable | moderate | significant (of the excess PSI) | no_data
    drifted: bool  # the detector's verdict
    q_value: float | None = None  # p-value adjusted over the report's whole family
    ks: float | None = None  # binned KS statistic
    psi_expected: float | None = None  # the PSI sampling noise alone gives at these sample sizes


def feature_view(reference: ReferenceFeature, finding: Finding | None) -> FeatureDrift:
    if finding is None or finding.psi is None:
        n = finding.n_observed if finding else 0
        return FeatureDrift(reference.index, reference.name, n, None, None, None, None, "no_data", drifted=False)
    return FeatureDrift(
        index=reference.index,
        name=reference.name,
        n_observed=finding.n_observed,
        psi=finding.psi,
        js_distance=finding.js_distance,
        chi_square=finding.chi_square,
        p_value=finding.p_value,
        level=_level(finding),
        drifted=finding.drifted,
        q_value=finding.q_value,
        ks=finding.ks,
        psi_expected=finding.psi_null,
    )


@dataclass(frozen=True)
class PredictionDrift:
    n_observed: int
    psi: float | None
    js_distance: float | None
    level: str
    drifted: bool = False
    p_value: float | None = None
    q_value: float | None = None


def prediction_view(finding: Finding | None) -> PredictionDrift:
    if finding is None or finding.psi is None:
        return PredictionDrift(finding.n_observed if finding else 0, None, None, "no_data")
    return PredictionDrift(
        n_observed=finding.n_observed,
        psi=finding.psi,
        js_distance=finding.js_distance,
        level=_level(finding),
        drifted=finding.drifted,
        p_value=finding.p_value,
        q_value=finding.q_value,
    )


@dataclass(frozen=True)
class LabelDrift:
    """A multilabel model's label: how often it is predicted on, in the reference and in the field."""

    index: int
    name: str
    reference_rate: float | None  # share of the reference (held-out) rows predicted with the label on
    observed_rate: float | None  # share of the observed rows; None: nothing observed
    n_observed: int
    psi: float | None
    p_value: float | None
    q_value: float | None
    level: str
    drifted: bool


def label_view(
    index: int, name: str, reference: Counts, observed: Counts | None, finding: Finding | None
) -> LabelDrift:
    """`reference` and `observed`: rows [off, on] for the label, the finding the test of one against the other."""

    def rate(counts: Counts | None) -> float | None:
        rows = float(sum(counts)) if counts is not None else 0.0
        return float(counts[1]) / rows if counts is not None and rows else None

    reference_rate = rate(reference)
    if finding is None or finding.psi is None:
        n = finding.n_observed if finding else 0
        return LabelDrift(index, name, reference_rate, None, n, None, None, None, "no_data", drifted=False)
    return LabelDrift(
        index=index,
        name=name,
        reference_rate=reference_rate,
        observed_rate=rate(observed),
        n_observed=finding.n_observed,
        psi=finding.psi,
        p_value=finding.p_value,
        q_value=finding.q_value,
        level=_level(finding),
        drifted=finding.drifted,
    )
