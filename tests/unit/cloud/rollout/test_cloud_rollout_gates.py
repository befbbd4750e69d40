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
    latency_threshold_us,
    robust_log_ratio,
    shift_log_bayes_factor,
    slow_counts,
)
from protocols.telemetry_bins import LATENCY_BOUNDS_US

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


# -- early breach of the p95 latency and shadow agreement gates: per device, and without any one device --------

B = len(LATENCY_BOUNDS_US) + 1  # buckets of the agents' fixed latency histogram


def latency_histogram(latencies_us) -> list[float]:  # type: ignore[no-untyped-def]
    """The agent's histogram: bucket i holds (bounds[i-1], bounds[i]], the last is open-ended."""
    return list(np.bincount(np.searchsorted(LATENCY_BOUNDS_US, latencies_us), minlength=B).astype(float))


def arm(device_latencies: dict[str, list[float]], shadow: dict[str, tuple[int, int]] | None = None) -> ArmFigures:
    hists = {d: latency_histogram(v) for d, v in device_latencies.items()}
    shadow = shadow or {}
    return ArmFigures(devices=len(hists), inferences=sum(len(v) for v in device_latencies.values()),
                      p95_latency_us=float(np.percentile(np.concatenate(list(device_latencies.values())), 95)),
                      latency_bounds=LATENCY_BOUNDS_US, device_latency=hists,
                      shadow_compared=sum(c for c, _ in shadow.values()),
                      shadow_agreed=sum(a for _, a in shadow.values()),
                      device_shadow={d: (float(c), float(a)) for d, (c, a) in shadow.items()})  # fmt: skip


TIMED_BASELINE = ArmFigures(devices=10, inferences=5000, errors=5, p95_latency_us=1000.0)


def test_a_clearly_slower_or_disagreeing_model_breaches_before_the_minimum_evidence() -> None:
    slow = arm({"a": [4000.0] * 12, "b": [4000.0] * 12})  # 4x the previous p95 on both canaries, 24 inferences
    verdict = judge(SEQUENTIAL, ALL_INSTALLED, slow, TIMED_BASELINE)
    assert [g.gate for g in verdict.breaches] == ["p95_latency"] and "early" in verdict.breaches[0].detail
    assert verdict.breaches[0].value == 4.0
    disagreeing = arm({"a": [900.0] * 12, "b": [900.0] * 12}, shadow={"a": (12, 2), "b": (12, 3)})
    verdict = judge(SEQUENTIAL, ALL_INSTALLED, disagreeing, TIMED_BASELINE)
    assert [g.gate for g in verdict.breaches] == ["shadow_agreement"] and "early" in verdict.breaches[0].detail
    old = GatePolicy(min_devices=5, min_inferences=50, early_breach_alpha=0)  # the fixed-sample rule waits
    assert judge(old, ALL_INSTALLED, slow, TIMED_BASELINE).decision is Decision.WAIT
    assert judge(old, ALL_INSTALLED, disagreeing, TIMED_BASELINE).decision is Decision.WAIT


def test_one_noisy_device_or_a_slowdown_under_the_noise_floor_does_not_breach_early() -> None:
    cases = [
        arm({"a": [9000.0] * 30, "b": [900.0] * 30}),  # one device's load, the other as fast as before
        arm({"a": [900.0] * 15, "b": [900.0] * 15}, shadow={"a": (15, 0), "b": (15, 15)}),  # one device's inputs
        arm({"a": [1240.0] * 30, "b": [1240.0] * 30}),  # 1.24x: under the 1.5 ratio
    ]
    quick = ArmFigures(devices=10, inferences=5000, p95_latency_us=100.0)  # +250 µs floor: 350 µs allowed
    for figures, baseline in [(c, TIMED_BASELINE) for c in cases] + [(arm({"a": [340.0] * 30, "b": [340.0] * 30}),
                                                                      quick)]:  # fmt: skip
        verdict = judge(SEQUENTIAL, ALL_INSTALLED, figures, baseline)
        assert verdict.decision is Decision.WAIT, (figures.device_latency, figures.device_shadow)
    assert judge(SEQUENTIAL, ALL_INSTALLED, arm({"a": [400.0] * 30, "b": [400.0] * 30}), quick).decision is (
        Decision.BREACH)  # 4x and 300 µs slower: over the floor as well


def test_the_latency_sequential_test_keeps_its_false_alarm_rate_over_repeated_looks() -> None:
    # three devices whose new p95 is exactly the allowed one (on a bucket edge: the test's count is exact there),
    # looked at every 10 inferences per device up to 300: the chance of ever breaching stays under alpha
    rng = np.random.default_rng(10)
    alpha, waves = 0.01, 600
    policy = GatePolicy(min_devices=5, min_inferences=100_000, early_breach_alpha=alpha)
    allowed = LATENCY_BOUNDS_US[22]  # 1584.9 µs
    baseline = ArmFigures(devices=10, inferences=5000, p95_latency_us=allowed / policy.max_p95_ratio)
    assert latency_threshold_us(policy, allowed / policy.max_p95_ratio) == allowed
    sigma = 0.6
    latencies = rng.lognormal(math.log(allowed) - 1.6448536 * sigma, sigma, size=(waves, 3, 300))  # 5 % over
    buckets = np.searchsorted(LATENCY_BOUNDS_US, latencies)  # the agent's histogram buckets
    histograms = np.cumsum(buckets[..., None] == np.arange(B), axis=2, dtype=np.int16)  # after each inference
    histograms = histograms[:, :, 9::10].transpose(0, 2, 1, 3)  # (wave, look, device, bucket)
    slow = slow_counts(LATENCY_BOUNDS_US, histograms, allowed)  # (wave, look, device)
    evidence = robust_log_ratio(slow, histograms.sum(axis=-1) - slow, 0.05)
    alarms = int(np.sum(evidence.max(axis=1) >= math.log(1 / alpha)))
    assert alarms / waves <= alpha + 3 * math.sqrt(alpha / waves), alarms
    # the gate itself judges the same way: the looks of a few waves through judge()
    for w in range(3):
        for look in (0, 9, 29):
            figures = ArmFigures(devices=3, inferences=int(histograms[w, look].sum()), p95_latency_us=allowed,
                                 latency_bounds=LATENCY_BOUNDS_US,
                                 device_latency={str(d): list(histograms[w, look, d]) for d in range(3)})  # fmt: skip
            breached = judge(policy, ALL_INSTALLED, figures, baseline).decision is Decision.BREACH
            assert breached == (evidence[w, look] >= math.log(1 / alpha))


def test_the_agreement_sequential_test_keeps_its_false_alarm_rate_over_repeated_looks() -> None:
    rng = np.random.default_rng(11)
    alpha, waves, limit = 0.01, 2000, 0.9
    disagreed = np.cumsum(rng.random((waves, 3, 300)) >= limit, axis=2)[:, :, 9::10].transpose(0, 2, 1)
    looks = np.arange(10, 301, 10)[None, :, None]
    evidence = robust_log_ratio(disagreed, looks - disagreed, 1 - limit)  # exactly at the limit
    alarms = int(np.sum(evidence.max(axis=1) >= math.log(1 / alpha)))
    assert alarms / waves <= alpha + 3 * math.sqrt(alpha / waves)
