"""The drift detector: every comparison of a report in one false-discovery family (pure).

A report compares many samples with the reference profile: each telemetry window of each device, each
device's whole range, the fleet's sum, for every feature and for the prediction histogram. Each sample is
one hypothesis (the confidence histogram of a classifier too: its top-class probability over fixed bins,
tested like a feature; and each label of a multilabel model: its rows off and on, two bins); all of them
share one Benjamini-Hochberg (or -Yekutieli) family, so adding devices, features or windows does not add
false alerts. A sample is *drifted* only when all three hold:

    enough rows      n >= min_rows (a 50-row window is tested, a 5-row one is not)
    significant      its q-value <= alpha; its p-value is the smaller of the homogeneity test (the larger
                     of the chi-square and G p-values) and the binned KS, doubled (Bonferroni over the two)
    large enough     its PSI exceeds the PSI two samples of these sizes show with no drift by
                     min_effect_psi (so a large sample cannot alert on a negligible shift, nor a small
                     window on its own noise)

`attribute` says which devices drive a fleet-wide alert and on which features.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cloud.monitoring import stats

Scope = Literal["window", "device", "fleet"]
PREDICTIONS = -1  # the target of a prediction-histogram sample (features have their index)
CONFIDENCE = -2  # the target of a confidence-histogram sample (a classifier's top-class probability)
LABEL_BASE = -3  # label i of a multilabel model (its positive rate) is the target LABEL_BASE - i


def label_target(i: int) -> int:
    return LABEL_BASE - i


def label_index(target: int) -> int | None:
    """The label a target stands for, or None when it is not a label's."""
    return LABEL_BASE - target if target <= LABEL_BASE else None


def is_output(target: int) -> bool:
    """Whether a target is the model's output (predictions, confidence, a label), not one of its inputs."""
    return target < 0


@dataclass(frozen=True)
class DriftPolicy:
    alpha: float = 0.01  # false discovery rate of a report
    fdr: stats.FdrMethod = "bh"
    min_rows: int = 50
    min_effect_psi: float = 0.02  # excess PSI; a 0.15 sigma location shift of a normal over 10 quantile bins


DEFAULT_POLICY = DriftPolicy()


@dataclass(frozen=True)
class Sample:
    scope: Scope
    device_id: str | None  # None: the fleet
    window_end_ms: int | None  # None: summed over windows
    target: int  # feature index, PREDICTIONS, CONFIDENCE or label_target(i)
    counts: Sequence[float] | np.ndarray  # over the reference's bins for `target`


@dataclass(frozen=True)
class Finding:
    scope: Scope
    device_id: str | None
    window_end_ms: int | None
    target: int
    n_observed: int
    tested: bool  # False: too few rows (or one bin left after merging): not in the family
    p_value: float | None
    q_value: float | None
    chi_square: float | None
    ks: float | None  # binned KS statistic (a lower bound of the continuous one)
    ks_upper: float | None
    psi: float | None
    psi_null: float | None  # the PSI expected with no drift at these sample sizes
    js_distance: float | None
    drifted: bool

    @property
    def excess_psi(self) -> float | None:
        return None if self.psi is None or self.psi_null is None else self.psi - self.psi_null


_COLUMNS = ("n", "tested", "p", "chi", "ks", "ks_upper", "psi", "psi_null", "js")


def _measure(reference: np.ndarray, observed: np.ndarray, policy: DriftPolicy) -> dict[str, np.ndarray]:
    """The statistics of samples over the same number of bins as columns, one row per sample against its
    own reference row, all as one array computation (NaN: not measured)."""
    n, ref_n = observed.sum(axis=1), reference.sum(axis=1)
    measured = (n > 0) & (ref_n > 0)
    columns = {name: np.full(len(observed), np.nan) for name in _COLUMNS}
    columns["n"], columns["tested"] = n, np.zeros(len(observed))
    if measured.any():
        ref, live = reference[measured], observed[measured]
        chi = stats.chi_square_two_sample(ref, live)
        g = stats.g_test(ref, live)
        ks = stats.binned_ks(ref, live)
        # Pearson's tail is too light for a sparse bin running high, G's for one running empty: the larger
        # p-value of the two holds its level down to the 1e-4 a family of thousands needs
        homogeneity = np.maximum(chi.p_value, g.p_value)
        columns["tested"][measured] = (n[measured] >= policy.min_rows) & (chi.dof > 0)
        for name, values in {
            "p": np.minimum(1.0, 2 * np.minimum(homogeneity, ks.p_value)), "chi": chi.statistic,
            "ks": ks.statistic, "ks_upper": ks.upper, "psi": stats.psi(ref, live),
            "psi_null": stats.psi_expected_null(reference.shape[1], ref_n[measured], n[measured]),
            "js": stats.js_distance(ref, live),
        }.items():  # fmt: skip
            columns[name][measured] = values
    return columns


def _value(x: float) -> float | None:
    # math, not numpy: called ~9 times per sample (hundreds of thousands per fleet-wide alert evaluation over
    # 200 devices), where np.isnan on a Python float cost ~40 % of the evaluation (py-spy)
    return None if math.isnan(x) else float(x)


def detect(
    reference: Mapping[int, Sequence[float]], samples: Sequence[Sample], policy: DriftPolicy = DEFAULT_POLICY
) -> list[Finding]:
    """One finding per sample, in order; `drifted` decided over all of them as one family."""
    refs = {k: np.asarray(v, dtype=float) for k, v in reference.items()}
    by_bins: dict[int, list[int]] = defaultdict(list)  # samples over as many bins compute as one array
    for i, s in enumerate(samples):
        if s.target not in refs:
            raise ValueError(f"no reference for target {s.target}")
        if len(s.counts) != len(refs[s.target]):
            raise ValueError(f"target {s.target}: {len(s.counts)} bins, the reference has {len(refs[s.target])}")
        by_bins[len(s.counts)].append(i)
    table = {name: np.full(len(samples), np.nan) for name in _COLUMNS}
    for bins, positions in by_bins.items():
        reference_rows = np.stack([refs[samples[i].target] for i in positions])
        observed = np.asarray([samples[i].counts for i in positions], dtype=float).reshape(len(positions), bins)
        for name, values in _measure(reference_rows, observed, policy).items():
            table[name][positions] = values
    tested = table["tested"] == 1
    q = np.full(len(samples), np.nan)
    q[tested] = stats.fdr_adjust(table["p"][tested], policy.fdr)
    excess = table["psi"] - table["psi_null"]
    drifted = tested & (q <= policy.alpha) & (excess >= policy.min_effect_psi)
    rows = zip(*(table[name].tolist() for name in _COLUMNS), q.tolist(), drifted.tolist(), strict=True)
    return [
        Finding(
            s.scope,
            s.device_id,
            s.window_end_ms,
            s.target,
            int(n),
            tested=bool(t),
            p_value=_value(p) if t else None,
            q_value=_value(qv),
            chi_square=_value(chi),
            ks=_value(ks),
            ks_upper=_value(up),
            psi=_value(v),
            psi_null=_value(null),
            js_distance=_value(js),
            drifted=bool(d),
        )  # fmt: skip
        for s, (n, t, p, chi, ks, up, v, null, js, qv, d) in zip(samples, rows, strict=True)
    ]


@dataclass(frozen=True)
class DeviceAttribution:
    device_id: str
    features: list[int]  # drifted in this device's windows or its whole range
    predictions: bool  # its prediction histogram drifted
    share: float  # of the fleet's excess divergence over the drifted targets (n x excess PSI)
    confidence: bool = False  # its confidence histogram drifted
    labels: list[int] = field(default_factory=list)  # multilabel: the labels (indexes) whose positive rate drifted


@dataclass(frozen=True)
class Attribution:
    alert: bool  # any drifted sample: the fleet's sum, a device's range or a window
    fleet_features: list[int]  # drifted in the fleet's summed counts
    fleet_predictions: bool
    fleet_confidence: bool = False
    fleet_labels: list[int] = field(default_factory=list)  # multilabel: labels drifted in the fleet's sum
    devices: list[DeviceAttribution] = field(default_factory=list)  # drivers first


def attribute(findings: Sequence[Finding]) -> Attribution:
    """Which devices and targets drive the alerts of a report. A device's share weighs its whole-range
    excess PSI by its rows, over every target drifted anywhere: a device with few rows or a small shift
    carries little of the fleet's divergence even when its own test is significant."""
    drifted = [f for f in findings if f.drifted]
    targets = {f.target for f in drifted}
    per_device: dict[str, set[int]] = defaultdict(set)
    for f in drifted:
        if f.device_id is not None:
            per_device[f.device_id].add(f.target)
    weight: dict[str, float] = defaultdict(float)
    for f in findings:
        if f.scope == "device" and f.device_id is not None and f.target in targets:
            weight[f.device_id] += f.n_observed * max(f.excess_psi or 0.0, 0.0)
    total = sum(weight.values())
    devices = [
        DeviceAttribution(
            device_id=d,
            features=sorted(t for t in per_device[d] if not is_output(t)),
            predictions=PREDICTIONS in per_device[d],
            share=weight[d] / total if total > 0 else 0.0,
            confidence=CONFIDENCE in per_device[d],
            labels=_labels(per_device[d]),
        )
        for d in per_device
    ]
    devices.sort(key=lambda a: (-a.share, -len(a.features), a.device_id))
    fleet = [f for f in drifted if f.scope == "fleet"]
    return Attribution(
        alert=bool(drifted),
        fleet_features=sorted(f.target for f in fleet if not is_output(f.target)),
        fleet_predictions=any(f.target == PREDICTIONS for f in fleet),
        fleet_confidence=any(f.target == CONFIDENCE for f in fleet),
        fleet_labels=_labels(f.target for f in fleet),
        devices=devices,
    )


def _labels(targets: Iterable[int]) -> list[int]:
    return sorted(i for i in map(label_index, targets) if i is not None)
