from __future__ import annotations

import numpy as np
import pytest

from cloud.monitoring import detector, drift
from cloud.monitoring.detector import DriftPolicy, Sample

TRUTH = np.full(10, 0.1)
REFERENCE_ROWS = 5000


def _reference(features: int) -> dict[int, list[float]]:
    rng = np.random.default_rng(0)
    return {i: rng.multinomial(REFERENCE_ROWS, TRUTH).tolist() for i in range(features)}


def _shifted(share: float) -> np.ndarray:
    """Bin probabilities with `share` of the mass moved from the lower half to the upper half."""
    p = TRUTH.copy()
    p[:5] -= share / 5
    p[5:] += share / 5
    return p


def test_clean_windows_across_devices_raise_no_alert() -> None:
    rng = np.random.default_rng(1)
    reference = _reference(8)
    samples = [
        Sample("window", f"d{d}", w, i, rng.multinomial(int(rng.integers(50, 500)), TRUTH))
        for d in range(20) for w in range(10) for i in range(8)
    ]  # fmt: skip
    findings = detector.detect(reference, samples)
    assert len(findings) == len(samples) and all(f.tested for f in findings)
    assert not any(f.drifted for f in findings)
    assert not detector.attribute(findings).alert


def test_a_shifted_feature_on_one_device_is_found_and_attributed() -> None:
    rng = np.random.default_rng(2)
    reference = _reference(4)
    samples = [Sample("device", f"d{d}", None, i, rng.multinomial(500, TRUTH)) for d in range(10) for i in range(4)]
    samples.append(Sample("device", "odd", None, 2, rng.multinomial(500, _shifted(0.2))))
    findings = detector.detect(reference, samples)
    assert [(f.device_id, f.target) for f in findings if f.drifted] == [("odd", 2)]
    odd = findings[-1]
    assert odd.q_value is not None and odd.q_value <= 0.01 and (odd.excess_psi or 0) > 0.02
    attribution = detector.attribute(findings)
    assert attribution.alert and attribution.devices[0].device_id == "odd"
    assert attribution.devices[0].features == [2] and attribution.devices[0].share > 0.5  # the rest: noise elsewhere


def test_too_few_rows_are_not_tested_and_a_negligible_shift_is_not_an_alert() -> None:
    rng = np.random.default_rng(3)
    reference = {0: (np.full(10, 0.1) * 1e6).tolist()}
    tiny = Sample("window", "d", 1, 0, [0, 0, 0, 0, 0, 0, 0, 0, 0, 20])  # all in one bin, but 20 rows
    huge = Sample("device", "d", None, 0, rng.multinomial(2_000_000, _shifted(0.02)))  # significant, tiny effect
    small, large = detector.detect(reference, [tiny, huge])
    assert not small.tested and small.p_value is None and not small.drifted
    assert large.p_value is not None and large.p_value < 1e-6
    assert not large.drifted
    assert detector.detect(reference, [huge], DriftPolicy(min_effect_psi=0.0))[0].drifted


def test_one_family_over_all_samples() -> None:
    # the same borderline p-value passes alone and not among many clean samples
    rng = np.random.default_rng(4)
    reference = _reference(1)
    borderline = Sample("window", "d", 0, 0, rng.multinomial(400, _shifted(0.12)))
    (alone,) = detector.detect(reference, [borderline], DriftPolicy(alpha=0.05))
    assert alone.p_value is not None and 1e-4 < alone.p_value < 0.05 and alone.drifted
    crowd = [Sample("window", "d", w, 0, rng.multinomial(400, TRUTH)) for w in range(1, 500)]
    among = detector.detect(reference, [borderline, *crowd], DriftPolicy(alpha=0.05))[0]
    assert among.p_value == alone.p_value and not among.drifted


def test_mismatched_bins_or_unknown_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="bins"):
        detector.detect({0: [1.0, 2.0]}, [Sample("window", "d", 0, 0, [1, 2, 3])])
    with pytest.raises(ValueError, match="no reference"):
        detector.detect({0: [1.0, 2.0]}, [Sample("window", "d", 0, 7, [1, 2])])


def test_merge_counts_sums_and_refuses_mismatched_bins() -> None:
    merged = drift.merge_counts([{0: [1, 2], 1: [3, 0]}, {0: [4, 5]}, {"1": [1, 1]}])  # type: ignore[list-item]
    assert merged == {0: [5, 7], 1: [4, 1]}
    with pytest.raises(ValueError, match="bins"):
        drift.merge_counts([{0: [1, 2]}, {0: [1, 2, 3]}])


def test_prediction_labels_align_and_views_read_the_excess_psi() -> None:
    ref, obs = drift.align_labelled(["a", "b"], [50, 50], ["b", "c", "a"], [10, 5, 85])
    assert ref == [50.0, 50.0, 0.0]
    assert obs == [85.0, 10.0, 5.0]
    (finding,) = detector.detect({detector.PREDICTIONS: ref}, [Sample("device", "d", None, detector.PREDICTIONS, obs)])
    view = drift.prediction_view(finding)
    assert view.n_observed == 100 and view.level == "significant" and view.drifted
    assert drift.prediction_view(None).level == "no_data"


def test_a_report_tests_each_devices_latest_windows_and_sums_the_rest() -> None:
    from types import SimpleNamespace

    from cloud.monitoring import summaries
    from protocols.v1 import messages_pb2 as pb

    profile = pb.ReferenceProfile(n_rows=1000)
    profile.features.add(index=0, name="f0", bin_edges=[0, 1, 2, 3, 4], counts=[250] * 4)
    rows = [
        SimpleNamespace(device_id="d", window_end_ms=i, feature_counts={"0": [25, 25, 25, 25]}, prediction_counts={})
        for i in range(summaries.WINDOWS_TESTED + 30)
    ]
    report = summaries.drift_report(profile, rows, "m", "1", "d")  # type: ignore[arg-type]
    assert report.tests == summaries.WINDOWS_TESTED + 1  # the latest windows, then the device's whole range
    assert report.features[0].n_observed == 100 * len(rows)


def test_confidence_drift_is_tested_like_a_feature_and_named_per_device() -> None:
    from types import SimpleNamespace

    from cloud.monitoring import summaries
    from protocols.telemetry_bins import CONFIDENCE_EDGES
    from protocols.v1 import messages_pb2 as pb

    rng = np.random.default_rng(7)
    sure = np.array([0.01, 0.01, 0.02, 0.02, 0.03, 0.04, 0.07, 0.1, 0.2, 0.5])  # a confident model
    unsure = np.array([0.02, 0.04, 0.08, 0.1, 0.12, 0.12, 0.12, 0.1, 0.15, 0.15])  # the same model on new inputs
    profile = pb.ReferenceProfile(n_rows=5000)
    profile.features.add(index=0, name="f0", bin_edges=[0, 1, 2, 3, 4], counts=[1250] * 4)
    profile.confidence.bin_edges.extend(CONFIDENCE_EDGES)
    profile.confidence.counts.extend(rng.multinomial(5000, sure).tolist())

    def row(device: str, end: int, p: np.ndarray, confidence: bool = True) -> SimpleNamespace:
        counts = {"confidence": rng.multinomial(300, p).tolist()} if confidence else {}
        features = {"0": rng.multinomial(300, [0.25] * 4).tolist()}
        return SimpleNamespace(device_id=device, window_end_ms=end, feature_counts=features, prediction_counts=counts)

    rows = [row(f"d{d}", w, sure) for d in range(6) for w in range(5)] + [row("odd", w, unsure) for w in range(5)]
    rows.append(row("old-agent", 1, sure, confidence=False))  # an agent that sends no confidence: no sample
    two_bins = {"confidence": [1, 2]}
    rows.append(SimpleNamespace(device_id="bad", window_end_ms=1, feature_counts={}, prediction_counts=two_bins))
    report = summaries.drift_report(profile, rows, "m", "1", None)  # type: ignore[arg-type]
    assert report.confidence is not None and report.confidence.drifted
    assert report.ignored_sketches == 1  # the two-bin confidence histogram cannot be compared
    lines = {line.device_id: line for line in report.devices}
    assert lines["odd"].confidence_drifted and not lines["odd"].drifted_features
    assert not any(lines[f"d{d}"].confidence_drifted for d in range(6))
    assert report.attribution is not None and report.attribution.devices[0].device_id == "odd"
    assert report.attribution.devices[0].confidence and report.attribution.fleet_confidence
    # no confidence reference (a regressor, an older compiler): nothing about confidence at all
    profile.ClearField("confidence")
    assert summaries.drift_report(profile, rows, "m", "1", None).confidence is None  # type: ignore[arg-type]


def test_each_label_of_a_multilabel_model_is_tested_on_its_own() -> None:
    """A fleet where one device turns label "b" on 2.5 times as often: "b" is flagged (fleet-wide and on that
    device), "a" and "c" are not; label counts over other labels are ignored; no label rates: no lines."""
    from types import SimpleNamespace

    from cloud.monitoring import alerts, summaries
    from protocols.v1 import messages_pb2 as pb

    rng = np.random.default_rng(3)
    rates = [0.3, 0.2, 0.6]
    profile = pb.ReferenceProfile(n_rows=2000)
    profile.features.add(index=0, name="f0", bin_edges=[0, 1, 2, 3, 4], counts=[500] * 4)
    profile.label_rates.CopyFrom(pb.LabelRates(labels=["a", "b", "c"], positives=[600, 400, 1200], rows=2000))

    def row(device: str, end: int, on: list[float]) -> SimpleNamespace:
        counts = {"label_counts": [300, *(int(rng.binomial(300, p)) for p in on)]}
        features = {"0": rng.multinomial(300, [0.25] * 4).tolist()}
        return SimpleNamespace(device_id=device, window_end_ms=end, feature_counts=features, prediction_counts=counts)

    rows = [row(f"d{d}", w, rates) for d in range(3) for w in range(4)] + [
        row("odd", w, [0.3, 0.5, 0.6]) for w in range(4)
    ]
    rows.append(
        SimpleNamespace(device_id="bad", window_end_ms=1, feature_counts={}, prediction_counts={"label_counts": [9, 1]})
    )
    report = summaries.drift_report(profile, rows, "m", "1", None)  # type: ignore[arg-type]
    assert [(line.name, line.drifted) for line in report.labels] == [("a", False), ("b", True), ("c", False)]
    assert report.labels[1].reference_rate == pytest.approx(0.2) and report.labels[1].n_observed == 16 * 300
    assert report.ignored_sketches == 1  # counts over two labels cannot be read onto three
    lines = {line.device_id: line for line in report.devices}
    assert lines["odd"].drifted_labels == [1] and not lines["odd"].drifted_features
    assert not any(lines[f"d{d}"].drifted_labels for d in range(3))
    assert report.attribution is not None and report.attribution.fleet_labels == [1]
    assert report.attribution.devices[0].device_id == "odd" and report.attribution.devices[0].labels == [1]
    assert report.predictions.level == "no_data"
    alert = alerts.drift_alert(report, alerts.DEFAULT_POLICY)
    assert alert is not None and "fleet-wide on labels b" in alert.summary and alert.detail["fleet_labels"] == ["b"]
    assert alert.detail["drivers"][0]["labels"] == ["b"]
    # a manifest without label rates (older compilers, other tasks): no label lines, counts ignored unread
    profile.ClearField("label_rates")
    assert summaries.drift_report(profile, rows, "m", "1", None).labels == []  # type: ignore[arg-type]
