"""Quality gates: each judges only with enough evidence, names its value and threshold, and any breach wins."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

from cloud.rollout.gates import (
    ArmFigures,
    Decision,
    GatePolicy,
    InstallTally,
    error_log_likelihood_ratio,
    judge,
    shift_log_bayes_factor,
)

POLICY = GatePolicy(min_devices=2, min_inferences=100)
BASELINE = ArmFigures(devices=10, inferences=10_000, errors=10, p95_latency_us=200.0,
                      predictions={"0": 5000, "1": 5000})  # fmt: skip
HEALTHY = ArmFigures(devices=2, inferences=400, errors=0, p95_latency_us=210.0, predictions={"0": 190, "1": 210},
                     shadow_compared=100, shadow_agreed=97)  # fmt: skip
ALL_INSTALLED = InstallTally(targets=2, failed=0)


def decisions(verdict) -> dict[str, Decision]:  # type: ignore[no-untyped-def]
    return {g.gate: g.decision for g in verdict.gates}


def test_a_healthy_wave_passes_every_gate() -> None:
    verdict = judge(POLICY, ALL_INSTALLED, HEALTHY, BASELINE)
    assert verdict.decision is Decision.PASS and verdict.breaches == []
    assert set(decisions(verdict)) == {"install_failures", "error_rate", "p95_latency", "prediction_shift",
                                       "shadow_agreement"}  # fmt: skip


def test_too_little_evidence_waits_but_a_failed_install_breaches_at_once() -> None:
    early = ArmFigures(devices=1, inferences=20, errors=20)  # all errors, but too few to judge
    assert judge(POLICY, ALL_INSTALLED, early, BASELINE).decision is Decision.WAIT
    failed = judge(POLICY, InstallTally(targets=2, failed=1), early, BASELINE)
    assert failed.decision is Decision.BREACH
    assert [(g.gate, g.value) for g in failed.breaches] == [("install_failures", 0.5)]


def test_each_kind_of_misbehaviour_breaches_its_own_gate() -> None:
    cases = {
        "error_rate": ArmFigures(**{**HEALTHY.__dict__, "errors": 12}),  # 3 % against 0.1 % before
        "p95_latency": ArmFigures(**{**HEALTHY.__dict__, "p95_latency_us": 500.0}),
        "prediction_shift": ArmFigures(**{**HEALTHY.__dict__, "predictions": {"0": 390, "1": 10}}),
        "shadow_agreement": ArmFigures(**{**HEALTHY.__dict__, "shadow_agreed": 50}),
    }
    for gate, figures in cases.items():
        verdict = judge(POLICY, ALL_INSTALLED, figures, BASELINE)
        assert verdict.decision is Decision.BREACH, gate
        assert [g.gate for g in verdict.breaches] == [gate]
        breach = verdict.breaches[0]
        assert breach.value is not None and breach.detail


def test_the_baseline_makes_the_error_gate_stricter_never_looser() -> None:
    noisy = ArmFigures(devices=10, inferences=10_000, errors=900)  # the previous model failed 9 %
    slightly_worse = ArmFigures(devices=2, inferences=1000, errors=20)  # 2 %: better than before, over 1 %
    assert decisions(judge(POLICY, ALL_INSTALLED, slightly_worse, noisy))["error_rate"] is Decision.BREACH
    assert decisions(judge(POLICY, ALL_INSTALLED, slightly_worse, None))["error_rate"] is Decision.BREACH
    fine = ArmFigures(devices=2, inferences=1000, errors=5)  # 0.5 %, baseline 0.1 % + 0.5 % allowed
    assert decisions(judge(POLICY, ALL_INSTALLED, fine, BASELINE))["error_rate"] is Decision.PASS


def test_without_a_baseline_only_the_absolute_gates_judge() -> None:
    verdict = judge(POLICY, ALL_INSTALLED, HEALTHY, None)
    assert verdict.decision is Decision.PASS
    skipped = {g.gate: g.value for g in verdict.gates if g.value is None}
    assert set(skipped) == {"p95_latency", "prediction_shift"}


def test_a_shift_seen_in_a_handful_of_predictions_is_not_yet_a_breach() -> None:
    few = ArmFigures(**{**HEALTHY.__dict__, "inferences": 12, "predictions": {"0": 10, "1": 2}})
    verdict = judge(GatePolicy(min_devices=2, min_inferences=10), ALL_INSTALLED, few, BASELINE)
    shift = next(g for g in verdict.gates if g.gate == "prediction_shift")
    assert shift.value is not None and shift.value > 0.25  # large PSI...
    assert shift.decision is Decision.PASS and "p=" in shift.detail  # ...but 12 predictions prove nothing


def test_a_slower_p95_breaches_only_when_it_is_also_slower_by_enough_to_matter() -> None:
    jitter = ArmFigures(**{**HEALTHY.__dict__, "p95_latency_us": 420.0})  # 2.1x, but only 220 µs more
    assert decisions(judge(POLICY, ALL_INSTALLED, jitter, BASELINE))["p95_latency"] is Decision.PASS
    latency = next(g for g in judge(POLICY, ALL_INSTALLED, jitter, BASELINE).gates if g.gate == "p95_latency")
    assert "250 µs or less slower is noise" in latency.detail  # a ratio over its limit that passes says why
    strict = GatePolicy(min_devices=2, min_inferences=100, min_p95_increase_us=0)
    assert decisions(judge(strict, ALL_INSTALLED, jitter, BASELINE))["p95_latency"] is Decision.BREACH


# -- early breach: sequential tests below the minimum evidence ------------------------------------------------

UNIFORM = ArmFigures(devices=10, inferences=5000, errors=50, predictions={str(k): 500 for k in range(10)})
SEQUENTIAL = GatePolicy(min_devices=5, min_inferences=50)  # the benchmark's canary gates


def test_overwhelming_evidence_breaches_before_the_minimum_evidence() -> None:
    errors = ArmFigures(devices=2, inferences=5, errors=20)  # 20 errors in 25 against a 1 % limit
    verdict = judge(SEQUENTIAL, ALL_INSTALLED, errors, UNIFORM)
    assert [g.gate for g in verdict.breaches] == ["error_rate"] and "early" in verdict.breaches[0].detail
    two_labels = ArmFigures(devices=2, inferences=30, predictions={"3": 15, "7": 15})  # PSI ~2.4 on 30
    verdict = judge(SEQUENTIAL, ALL_INSTALLED, two_labels, UNIFORM)
    assert [g.gate for g in verdict.breaches] == ["prediction_shift"]
    assert decisions(verdict)["error_rate"] is Decision.WAIT  # the others still wait for their evidence
    # the old rule (early_breach_alpha 0) waits for 5 devices and 50 inferences
    old = GatePolicy(min_devices=5, min_inferences=50, early_breach_alpha=0)
    assert judge(old, ALL_INSTALLED, errors, UNIFORM).decision is Decision.WAIT
    assert judge(old, ALL_INSTALLED, two_labels, UNIFORM).decision is Decision.WAIT


def test_borderline_or_thin_evidence_still_waits_for_the_minimum() -> None:
    cases = [
        ArmFigures(devices=2, inferences=22, errors=3),  # 12 %, but 3 errors could be bad luck
        ArmFigures(devices=1, inferences=5, errors=20),  # one device: perhaps its inputs, not the model
        ArmFigures(devices=2, inferences=5, errors=10),  # 15 attempts: under the floor of 20
        ArmFigures(devices=2, inferences=30, predictions={str(k): 3 for k in range(10)}),  # like the baseline
        # none in 4 of 10 labels: PSI 0.84, over its 0.25, but 1 chance in ~80 under the baseline
        ArmFigures(devices=2, inferences=30, predictions={"0": 6, "1": 6, "2": 5, "3": 5, "4": 4, "5": 4}),
    ]
    for figures in cases:
        assert judge(SEQUENTIAL, ALL_INSTALLED, figures, UNIFORM).decision is Decision.WAIT, figures


def test_the_error_sequential_test_keeps_its_false_alarm_rate_over_repeated_looks() -> None:
    # a model exactly at the limit, looked at every 10 inferences up to 1000: the chance of ever breaching
    # must stay under alpha (a fixed-sample test at level alpha at every look would exceed it several times)
    rng = np.random.default_rng(8)
    limit, alpha, waves = 0.05, 0.01, 1000
    errors = np.cumsum(rng.random((waves, 1000)) < limit, axis=1)[:, 9::10]
    looks = np.arange(10, 1001, 10)
    evidence = error_log_likelihood_ratio(errors, looks - errors, limit)
    alarms = int(np.sum(evidence.max(axis=1) >= math.log(1 / alpha)))
    assert alarms / waves <= alpha + 3 * math.sqrt(alpha / waves)
    naive = int(np.sum(binom.sf(errors - 1, looks, limit).min(axis=1) < alpha))
    assert naive / waves > 2 * alpha  # why a sequential test: peeking at a fixed-sample p-value does not do


def test_the_shift_sequential_test_keeps_its_false_alarm_rate_over_repeated_looks() -> None:
    rng = np.random.default_rng(9)
    proportions = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05, 0.03, 0.01, 0.01])
    baseline = list(rng.multinomial(5000, proportions))
    alpha, waves = 0.01, 500
    alarms = 0
    for _ in range(waves):
        draws = rng.choice(10, size=300, p=proportions)
        for n in range(20, 301, 10):
            if shift_log_bayes_factor(baseline, list(np.bincount(draws[:n], minlength=10))) >= math.log(1 / alpha):
                alarms += 1
                break
    assert alarms / waves <= alpha + 3 * math.sqrt(alpha / waves)


def test_a_model_that_fails_every_call_is_judged_on_its_failed_calls() -> None:
    failing = ArmFigures(devices=5, inferences=0, errors=1000)  # not one call answered
    for alpha in (0.0, 1e-3):  # with or without the early breach
        verdict = judge(GatePolicy(min_devices=5, min_inferences=50, early_breach_alpha=alpha), ALL_INSTALLED,
                        failing, BASELINE)  # fmt: skip
        assert [g.gate for g in verdict.breaches] == ["error_rate"], alpha
