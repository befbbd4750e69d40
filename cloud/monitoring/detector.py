"""The drift detector: every comparison of a report in one false-discovery family (pure).

A report compares many samples with the reference profile: each telemetry window of each device, each
device's whole range, the fleet's sum, for every feature and for the prediction histogram. Each sample is
one hypothesis; all of them share one Benjamini-Hochberg (or -Yekutieli) family, so adding devices,
features or windows does not add false alerts. A sample is *drifted* only when all three hold:

    enough rows      n >= min_rows (a 50-row window is tested, a 5-row one is not)
    significant      its q-value <= alpha; its p-value is the smaller of the two-sample chi-square and
                     the binned KS, doubled (Bonferroni over the two tests)
    large enough     its PSI exceeds the PSI two samples of these sizes show with no drift by
                     min_effect_psi (so a large sample cannot alert on a negligible shift, nor a small
                     window on its own noise)

`attribute` says which devices drive a fleet-wide alert and on which features.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from cloud.monitoring import stats

Scope = Literal["window", "device", "fleet"]
PREDICTIONS = -1  # the target of a prediction-histogram sample (features have their index)


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
    target: int  # feature index, or PREDICTIONS
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


def _measure(reference: np.ndarray, sample: Sample, policy: DriftPolicy) -> Finding:
    observed = np.asarray(sample.counts, dtype=float)
    n = int(observed.sum())
    empty = Finding(sample.scope, sample.device_id, sample.window_end_ms, sample.target, n, tested=False,
                    p_value=None, q_value=None, chi_square=None, ks=None, ks_upper=None, psi=None, psi_null=None,
                    js_distance=None, drifted=False)  # fmt: skip
    if n <= 0 or reference.sum() <= 0:
        return empty
    chi = stats.chi_square_two_sample(reference, observed)
    ks = stats.binned_ks(reference, observed)
    tested = n >= policy.min_rows and chi.dof > 0
    return replace(
        empty,
        tested=tested,
        p_value=min(1.0, 2 * min(chi.p_value, ks.p_value)) if tested else None,
        chi_square=chi.statistic,
        ks=ks.statistic,
        ks_upper=ks.upper,
        psi=stats.psi(reference, observed),
        psi_null=stats.psi_expected_null(len(reference), float(reference.sum()), n),
        js_distance=stats.js_distance(reference, observed),
    )


def detect(
    reference: Mapping[int, Sequence[float]], samples: Sequence[Sample], policy: DriftPolicy = DEFAULT_POLICY
) -> list[Finding]:
    """One finding per sample, in order; `drifted` decided over all of them as one family."""
    refs = {k: np.asarray(v, dtype=float) for k, v in reference.items()}
    for s in samples:
        if s.target not in refs:
            raise ValueError(f"no reference for target {s.target}")
        if len(s.counts) != len(refs[s.target]):
            raise ValueError(f"target {s.target}: {len(s.counts)} bins, the reference has {len(refs[s.target])}")
    findings = [_measure(refs[s.target], s, policy) for s in samples]
    tested = [i for i, f in enumerate(findings) if f.tested]
    q_values = stats.fdr_adjust([findings[i].p_value or 1.0 for i in tested], policy.fdr)
    for i, q in zip(tested, q_values, strict=True):
        f = findings[i]
        excess = f.excess_psi or 0.0
        drifted = bool(q <= policy.alpha and excess >= policy.min_effect_psi)
        findings[i] = replace(f, q_value=float(q), drifted=drifted)
    return findings


@dataclass(frozen=True)
class DeviceAttribution:
    device_id: str
    features: list[int]  # drifted in this device's windows or its whole range
    predictions: bool  # its prediction histogram drifted
    share: float  # of the fleet's excess divergence over the drifted targets (n x excess PSI)


@dataclass(frozen=True)
class Attribution:
    alert: bool  # any drifted sample: the fleet's sum, a device's range or a window
    fleet_features: list[int]  # drifted in the fleet's summed counts
    fleet_predictions: bool
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
            features=sorted(t for t in per_device[d] if t != PREDICTIONS),
            predictions=PREDICTIONS in per_device[d],
            share=weight[d] / total if total > 0 else 0.0,
        )
        for d in per_device
    ]
    devices.sort(key=lambda a: (-a.share, -len(a.features), a.device_id))
    fleet = [f for f in drifted if f.scope == "fleet"]
    return Attribution(
        alert=bool(drifted),
        fleet_features=sorted(f.target for f in fleet if f.target != PREDICTIONS),
        fleet_predictions=any(f.target == PREDICTIONS for f in fleet),
        devices=devices,
    )
