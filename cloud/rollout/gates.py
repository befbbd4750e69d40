"""Quality gates: is a wave's new model at least as good as what its devices ran before? Pure: no I/O.

A wave is judged on the fleet's own telemetry since activation (`ArmFigures` for the new model on the
wave's devices) against a baseline (the previous model, on the same devices before, or on the devices
still running it). Each gate answers PASS, WAIT (too little evidence yet: fewer than `min_devices`
devices with `min_inferences` inferences each between them) or BREACH, with the value and the threshold,
so the console and the CLI can show why. Install failures judge at once: a release that does not even
install needs no statistics. The verdict is BREACH if any gate breached, else WAIT if any waits, else PASS.

Early breach (sequential tests): below the minimum evidence a gate may still BREACH, never PASS, when the
evidence is already overwhelming, so a plainly bad model is stopped on its first telemetry windows instead
of after min_devices x min_inferences. The four rules are time-uniform: their likelihood ratio is a
(super)martingale under "the model is fine", so by Ville's inequality the chance that it EVER reaches
1/early_breach_alpha, however often the controller looks while the wave gathers evidence, is at most
early_breach_alpha per gate and wave (a false rollback probability of 4 x 1e-3 by default), assuming
independent inferences. Devices are not independent (one device's odd inputs), hence a floor: at least
EARLY_MIN_DEVICES devices and EARLY_MIN_ATTEMPTS inferences (capped by the policy's own minimums).
  error_rate         H0: rate <= the gate's limit. Mixture SPRT over alternatives 2x, 4x, ... the limit (to
                     0.99): 20 errors in 25 against 1 % breaches; 3 in 25 waits for the full evidence
  prediction_shift   H0: predictions drawn from the baseline's proportions (smoothed; the baseline is the
                     previous model's larger sample). Bayes factor of a uniform-Dirichlet multinomial against
                     them, and the PSI also over its threshold (a shift that matters, not only a real one):
                     30 predictions in 2 of 10 equally likely labels breach; 30 spread like the baseline wait.
                     Multilabel models: each label's rows on against its baseline rate (a uniform Beta), at
                     early_breach_alpha / labels each (a union bound over the labels)
  p95_latency        H0: the new p95 at most the allowed one (max_p95_ratio x the baseline's, and at least
                     min_p95_increase_us more), so at most 5 % of inferences take longer: the error SPRT on
                     inferences in histogram buckets wholly above it, from the devices' own histograms
  shadow_agreement   H0: agreement >= min_shadow_agreement: the error SPRT on disagreements
These two must also hold on the counts without any one device (see robust_log_ratio): one device's load or
odd inputs cannot breach alone; asking for more than the time-uniform test keeps its false-alarm bound. (A
stall of a host that runs many simulated devices slows them all at once: not independent, not protected.)
early_breach_alpha = 0 turns this off (the fixed-sample rule alone, as before).

Gates:
  install_failures   share of the wave's devices whose update failed (self-test, download, load)
  error_rate         inference errors / inferences, absolute (a baseline can only make it stricter)
  p95_latency        p95 latency against the baseline's p95 (a ratio, and a minimum increase in µs)
  prediction_shift   PSI of the prediction distribution against the baseline's, when also significant;
                     multilabel models: each label's positive rate, one test per label in one family
  shadow_agreement   on-device agreement with the previous model run in shadow on sampled inputs
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from scipy.special import gammaln

from cloud.monitoring import stats
from protocols.sequential import error_log_likelihood_ratio as error_log_likelihood_ratio  # shared with the agent

# an early breach needs at least this much evidence (or the policy's minimums, if smaller)
EARLY_MIN_DEVICES = 2
EARLY_MIN_ATTEMPTS = 20
P95_TAIL = 0.05  # the share of inferences slower than a p95


class Decision(StrEnum):
    PASS = "pass"
    WAIT = "wait"
    BREACH = "breach"


@dataclass(frozen=True)
class GatePolicy:
    max_install_failure_share: float = 0.0
    max_error_rate: float = 0.01
    max_error_rate_increase: float = 0.005  # over the baseline's, when there is one
    max_p95_ratio: float = 1.5
    # ...and only when p95 also grew by this much: jitter of a few dozen µs on a busy device is no regression
    min_p95_increase_us: float = 250.0
    max_prediction_psi: float = 0.25  # the "significant shift" rule of thumb (cloud.monitoring.drift)
    # PSI of a few dozen predictions is noisy: a shift breaches only when it is also unlikely by chance
    # (chi-square p-value of the new counts against the baseline's proportions below this)
    shift_significance: float = 0.01
    min_shadow_agreement: float = 0.9
    min_devices: int = 1
    min_inferences: int = 200  # across the wave, before a rate, a latency or a distribution may judge
    # below those minimums, a breach so clear that "the model is fine" has at most this probability of ever
    # looking as bad (see the module's docstring) breaches at once; 0: never before the minimums
    early_breach_alpha: float = 1e-3


@dataclass(frozen=True)
class ArmFigures:
    """One model's figures on a set of devices over a period, summed from telemetry windows."""

    devices: int = 0  # devices whose windows hold a call (an inference or an error; cloud.rollout.figures)
    inferences: int = 0  # answered; a failed inference counts in errors only (as the agent reports them)
    errors: int = 0
    p95_latency_us: float | None = None  # the worst device's p95 (a fleet p95 would need the histograms)
    predictions: Mapping[str, int] = field(default_factory=dict)  # label (or bin) -> count
    shadow_compared: int = 0
    shadow_agreed: int = 0
    # per device, capped as the sums are, for the early tests' "without any one device": its latency
    # histogram counts over `latency_bounds` (empty when the windows' bounds differ) and (compared, agreed)
    latency_bounds: tuple[float, ...] = ()
    device_latency: Mapping[str, Sequence[float]] = field(default_factory=dict)
    device_shadow: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # multilabel models: the rows counted, then per label (the manifest's label_rates order) the rows on
    label_counts: tuple[int, ...] = ()

    @property
    def error_rate(self) -> float | None:
        attempts = self.inferences + self.errors
        return self.errors / attempts if attempts else None


@dataclass(frozen=True)
class InstallTally:
    targets: int
    failed: int


@dataclass(frozen=True)
class GateResult:
    gate: str
    decision: Decision
    value: float | None
    threshold: float
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    gates: list[GateResult]

    @property
    def breaches(self) -> list[GateResult]:
        return [g for g in self.gates if g.decision is Decision.BREACH]


def judge(policy: GatePolicy, install: InstallTally, new: ArmFigures, baseline: ArmFigures | None) -> Verdict:
    gates = [_install(policy, install)]
    # failed calls are evidence too: counting answered ones only, a model that fails every call never judged
    if new.devices < policy.min_devices or new.inferences + new.errors < policy.min_inferences:
        detail = (f"{new.devices} device(s), {new.inferences + new.errors} inference(s) so far; judging needs "
                  f"{policy.min_devices} and {policy.min_inferences}")
        candidates = (_early_errors(policy, new, baseline), _early_latency(policy, new, baseline),
                      _early_shift(policy, new, baseline), _early_agreement(policy, new))  # fmt: skip
        early = {g.gate: g for g in candidates if g is not None}
        gates += [early.get(name) or GateResult(name, Decision.WAIT, None, threshold, detail)
                  for name, threshold in (
            ("error_rate", policy.max_error_rate), ("p95_latency", policy.max_p95_ratio),
            ("prediction_shift", policy.max_prediction_psi), ("shadow_agreement", policy.min_shadow_agreement),
        )]  # fmt: skip
    else:
        gates += [_errors(policy, new, baseline), _latency(policy, new, baseline), _shift(policy, new, baseline),
                  _agreement(policy, new)]  # fmt: skip
    decisions = {g.decision for g in gates}
    overall = next(d for d in (Decision.BREACH, Decision.WAIT, Decision.PASS) if d in decisions)
    return Verdict(overall, gates)


def _install(policy: GatePolicy, install: InstallTally) -> GateResult:
    share = install.failed / install.targets if install.targets else 0.0
    decision = Decision.BREACH if share > policy.max_install_failure_share else Decision.PASS
    return GateResult("install_failures", decision, share, policy.max_install_failure_share,
                      f"{install.failed} of {install.targets} device(s) failed to install")


def _errors(policy: GatePolicy, new: ArmFigures, baseline: ArmFigures | None) -> GateResult:
    rate = new.error_rate or 0.0
    limit = policy.max_error_rate
    base = baseline.error_rate if baseline is not None else None
    if base is not None:
        limit = min(limit, base + policy.max_error_rate_increase)
    detail = f"{new.errors} error(s) in {new.inferences + new.errors}"
    if base is not None:
        detail += f"; previous model {base:.4f}"
    return GateResult("error_rate", Decision.BREACH if rate > limit else Decision.PASS, rate, limit, detail)


def _early_evidence(policy: GatePolicy, new: ArmFigures) -> bool:
    attempts = new.inferences + new.errors
    return (policy.early_breach_alpha > 0 and new.devices >= min(EARLY_MIN_DEVICES, policy.min_devices)
            and attempts >= min(EARLY_MIN_ATTEMPTS, policy.min_inferences))  # fmt: skip


def _error_limit(policy: GatePolicy, baseline: ArmFigures | None) -> float:
    base = baseline.error_rate if baseline is not None else None
    return policy.max_error_rate if base is None else min(policy.max_error_rate, base + policy.max_error_rate_increase)


def shift_log_bayes_factor(baseline: list[int], new: list[int]) -> float:
    """log Bayes factor of "new predictions come from some other distribution" (uniform Dirichlet prior
    over the labels) against "from the baseline's proportions" (smoothed so that a label the baseline never
    predicted is rare, not impossible). Under the latter it is a martingale in the new predictions."""
    q = stats.smoothed(baseline)
    n = np.asarray(new, dtype=float)
    prior = np.ones_like(n)
    marginal = gammaln(prior.sum()) - gammaln(prior.sum() + n.sum()) + np.sum(gammaln(prior + n) - gammaln(prior))
    return float(marginal - np.sum(n * np.log(q)))


def _early_errors(policy: GatePolicy, new: ArmFigures, baseline: ArmFigures | None) -> GateResult | None:
    if not _early_evidence(policy, new) or not new.errors:
        return None
    limit = _error_limit(policy, baseline)
    if error_log_likelihood_ratio(new.errors, new.inferences, limit) < math.log(1 / policy.early_breach_alpha):
        return None
    return GateResult("error_rate", Decision.BREACH, new.error_rate, limit,
                      f"{new.errors} error(s) in {new.inferences + new.errors}: early, the sequential test "
                      f"(false alarm <= {policy.early_breach_alpha:g})")  # fmt: skip


def _per_label(new: ArmFigures, baseline: ArmFigures | None) -> tuple[np.ndarray, np.ndarray] | None:
    """A multilabel model's rows [off, on] per label (one row per label), before and after; None unless both
    arms counted the same labels (then the "predicted class" histogram, which counts a row only when exactly
    one label is on, would miss a label turned on beside others)."""
    if baseline is None or len(new.label_counts) < 2 or len(baseline.label_counts) != len(new.label_counts):
        return None
    if not new.label_counts[0] or not baseline.label_counts[0]:
        return None

    def off_on(counts: tuple[int, ...]) -> np.ndarray:
        on = np.minimum(np.asarray(counts[1:], dtype=float), counts[0])
        return np.stack([counts[0] - on, on], axis=1)

    return off_on(baseline.label_counts), off_on(new.label_counts)


def _label_detail(before: np.ndarray, after: np.ndarray, index: int) -> str:
    rate, was = after[index, 1] / after[index].sum(), before[index, 1] / before[index].sum()
    return f"label {index} on in {rate:.0%} of {after[index].sum():.0f} row(s) against {was:.0%}"


def _early_label_shift(policy: GatePolicy, before: np.ndarray, after: np.ndarray) -> GateResult | None:
    """Each label's positive rate its own sequential test (Bayes factor of a uniform Beta against the
    baseline's rate), at early_breach_alpha / labels: over the family, "the model is fine" still has at most
    early_breach_alpha of ever breaching (a union bound over time-uniform tests)."""
    if after[0].sum() < min(EARLY_MIN_ATTEMPTS, policy.min_inferences):
        return None
    labels = len(after)
    values = np.atleast_1d(stats.psi(before, after))
    bound = math.log(labels / policy.early_breach_alpha)
    shifted = [i for i in range(labels) if values[i] > policy.max_prediction_psi
               and shift_log_bayes_factor(list(before[i]), list(after[i])) >= bound]  # fmt: skip
    if not shifted:
        return None
    worst = max(shifted, key=lambda i: values[i])
    return GateResult("prediction_shift", Decision.BREACH, float(values[worst]), policy.max_prediction_psi,
                      f"{_label_detail(before, after, worst)}; {len(shifted)} of {labels} label(s) shifted: early, "
                      f"the sequential test per label (false alarm <= {policy.early_breach_alpha:g} over them)")


def _label_shift(policy: GatePolicy, before: np.ndarray, after: np.ndarray) -> GateResult:
    """Each label's rows off and on, two-sample tested against the baseline's: one family (Benjamini-Hochberg,
    as cloud.monitoring tests drift), a label breaching when significant in it and its PSI over the limit."""
    values = np.atleast_1d(stats.psi(before, after))
    q = stats.fdr_adjust(np.atleast_1d(stats.chi_square_two_sample(before, after).p_value))
    shifted = [i for i in range(len(after))
               if values[i] > policy.max_prediction_psi and q[i] < policy.shift_significance]  # fmt: skip
    worst = max(shifted or range(len(after)), key=lambda i: values[i])
    return GateResult("prediction_shift", Decision.BREACH if shifted else Decision.PASS, float(values[worst]),
                      policy.max_prediction_psi,
                      f"{_label_detail(before, after, worst)} (q={q[worst]:.2g}); {len(shifted)} of {len(after)} "
                      f"label(s) shifted")  # fmt: skip


def _early_shift(policy: GatePolicy, new: ArmFigures, baseline: ArmFigures | None) -> GateResult | None:
    if not _early_evidence(policy, new) or baseline is None:
        return None
    per_label = _per_label(new, baseline)
    if per_label is not None:
        return _early_label_shift(policy, *per_label)
    if not sum(baseline.predictions.values()):
        return None
    labels = sorted(set(baseline.predictions) | set(new.predictions))
    before = [baseline.predictions.get(k, 0) for k in labels]
    after = [new.predictions.get(k, 0) for k in labels]
    if sum(after) < min(EARLY_MIN_ATTEMPTS, policy.min_inferences):
        return None
    value = float(stats.psi(before, after))
    if value <= policy.max_prediction_psi or shift_log_bayes_factor(before, after) < math.log(
            1 / policy.early_breach_alpha):  # fmt: skip
        return None
    return GateResult("prediction_shift", Decision.BREACH, value, policy.max_prediction_psi,
                      f"PSI over {len(labels)} prediction label(s) of {sum(after)} prediction(s): early, the "
                      f"sequential test (false alarm <= {policy.early_breach_alpha:g})")  # fmt: skip


def robust_log_ratio(bad: Any, good: Any, limit: float) -> Any:
    """`error_log_likelihood_ratio` of per-device (bad, good) counts (devices on the last axis): on all
    devices' sums, and on the sums without each device in turn; the smallest. Only the former is the
    time-uniform test, so asking for both keeps its false-alarm bound, and no one device (its load, its odd
    inputs) can breach by itself. A single device has nobody to be left out for (a policy of min_devices 1
    judges on one device)."""
    b, g = np.asarray(bad, dtype=float), np.asarray(good, dtype=float)
    total = error_log_likelihood_ratio(b.sum(axis=-1), g.sum(axis=-1), limit)
    if b.shape[-1] < 2:
        return total
    without = error_log_likelihood_ratio(b.sum(axis=-1, keepdims=True) - b, g.sum(axis=-1, keepdims=True) - g, limit)
    return np.minimum(total, np.min(without, axis=-1))[()]


def slow_counts(bounds: Sequence[float], counts: Any, allowed_us: float) -> Any:
    """Inferences surely slower than `allowed_us` in latency histograms (buckets on the last axis, over
    `bounds` + an open-ended one): those in buckets wholly above it (a straddling bucket counts as fast)."""
    lower_edges = np.array([0.0, *bounds])
    return np.asarray(counts, dtype=float)[..., lower_edges >= allowed_us].sum(axis=-1)


def _early_breach(policy: GatePolicy, bad: Sequence[float], good: Sequence[float], limit: float) -> bool:
    enough = (len(bad) >= min(EARLY_MIN_DEVICES, policy.min_devices)
              and sum(bad) + sum(good) >= min(EARLY_MIN_ATTEMPTS, policy.min_inferences))  # fmt: skip
    return enough and float(robust_log_ratio(bad, good, limit)) >= math.log(1 / policy.early_breach_alpha)


def latency_threshold_us(policy: GatePolicy, baseline_p95_us: float) -> float:
    """The p95 the new model may have: the limit's ratio and, below the noise floor, the floor (both must
    be exceeded to breach, as in the fixed-sample rule)."""
    return max(baseline_p95_us * policy.max_p95_ratio, baseline_p95_us + policy.min_p95_increase_us)


def _early_latency(policy: GatePolicy, new: ArmFigures, baseline: ArmFigures | None) -> GateResult | None:
    """H0: the new p95 is at most the allowed one, so at most 5 % of inferences take longer: the error test
    on "took longer" per inference. Counted from buckets wholly above the allowed p95 (a latency there
    surely took longer; a bucket straddling it counts as fast), per device, leaving out any one device."""
    if (not _early_evidence(policy, new) or baseline is None or not baseline.p95_latency_us
            or not new.latency_bounds or not new.device_latency):  # fmt: skip
        return None
    allowed = latency_threshold_us(policy, baseline.p95_latency_us)
    counts = np.array([list(c) for c in new.device_latency.values()], dtype=float)
    if counts.shape[1] != len(new.latency_bounds) + 1:
        return None
    slow = slow_counts(new.latency_bounds, counts, allowed)
    fast = counts.sum(axis=1) - slow
    if not _early_breach(policy, list(slow), list(fast), P95_TAIL):
        return None
    ratio = (new.p95_latency_us or allowed) / baseline.p95_latency_us
    return GateResult("p95_latency", Decision.BREACH, ratio, policy.max_p95_ratio,
                      f"{slow.sum():.0f} of {counts.sum():.0f} inference(s) over {allowed:.0f} µs (p95 "
                      f"{baseline.p95_latency_us:.0f} µs before; {P95_TAIL:.0%} may be): early, the sequential test on "
                      f"{len(counts)} device(s) and without any one (false alarm <= {policy.early_breach_alpha:g})")


def _early_agreement(policy: GatePolicy, new: ArmFigures) -> GateResult | None:
    """H0: agreement at least min_shadow_agreement: the error test on disagreements, leaving out any one device."""
    if not _early_evidence(policy, new) or not new.device_shadow:
        return None
    compared, agreed = (np.array(c, dtype=float) for c in zip(*new.device_shadow.values(), strict=True))
    if not _early_breach(policy, list(compared - agreed), list(agreed), 1 - policy.min_shadow_agreement):
        return None
    return GateResult("shadow_agreement", Decision.BREACH, agreed.sum() / compared.sum(),
                      policy.min_shadow_agreement,
                      f"{agreed.sum():.0f} of {compared.sum():.0f} shadowed inputs agreed: early, the sequential "
                      f"test on {len(compared)} device(s) and without any one "
                      f"(false alarm <= {policy.early_breach_alpha:g})")  # fmt: skip


def _latency(policy: GatePolicy, new: ArmFigures, baseline: ArmFigures | None) -> GateResult:
    if new.p95_latency_us is None or baseline is None or not baseline.p95_latency_us:
        return GateResult("p95_latency", Decision.PASS, None, policy.max_p95_ratio, "no baseline to compare with")
    ratio = new.p95_latency_us / baseline.p95_latency_us
    slower = ratio > policy.max_p95_ratio and new.p95_latency_us - baseline.p95_latency_us > policy.min_p95_increase_us
    decision = Decision.BREACH if slower else Decision.PASS
    detail = f"p95 {new.p95_latency_us:.0f} µs against {baseline.p95_latency_us:.0f} µs"
    if ratio > policy.max_p95_ratio and not slower:  # say why a ratio over its limit passes: it reads as a bug
        detail += f"; passes: {policy.min_p95_increase_us:.0f} µs or less slower is noise"
    return GateResult("p95_latency", decision, ratio, policy.max_p95_ratio, detail)


def _shift(policy: GatePolicy, new: ArmFigures, baseline: ArmFigures | None) -> GateResult:
    per_label = _per_label(new, baseline)
    if per_label is not None:
        return _label_shift(policy, *per_label)
    if baseline is None or not sum(baseline.predictions.values()) or not sum(new.predictions.values()):
        return GateResult("prediction_shift", Decision.PASS, None, policy.max_prediction_psi,
                          "no prediction distribution to compare with")
    labels = sorted(set(baseline.predictions) | set(new.predictions))
    before = [baseline.predictions.get(k, 0) for k in labels]
    after = [new.predictions.get(k, 0) for k in labels]
    # both sides are samples: the two-sample test, not the baseline taken as exact proportions
    value, p_value = stats.psi(before, after), stats.chi_square_two_sample(before, after).p_value
    shifted = value > policy.max_prediction_psi and p_value < policy.shift_significance
    return GateResult("prediction_shift", Decision.BREACH if shifted else Decision.PASS, value,
                      policy.max_prediction_psi, f"PSI over {len(labels)} prediction label(s), p={p_value:.2g}")


def _agreement(policy: GatePolicy, new: ArmFigures) -> GateResult:
    if not new.shadow_compared:
        return GateResult("shadow_agreement", Decision.PASS, None, policy.min_shadow_agreement,
                          "no shadow comparisons reported")
    share = new.shadow_agreed / new.shadow_compared
    decision = Decision.BREACH if share < policy.min_shadow_agreement else Decision.PASS
    return GateResult("shadow_agreement", decision, share, policy.min_shadow_agreement,
                      f"{new.shadow_agreed} of {new.shadow_compared} shadowed inputs agreed")
