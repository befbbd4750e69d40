"""Meaning checks on device -> cloud messages (protocols.validation): what parses but cannot be true."""

from collections.abc import Callable

import pytest

from protocols.v1 import messages_pb2 as pb
from protocols.validation import FUTURE_SKEW_MS, INT64_MAX, ImplausibleMessage, check_upward

NOW = 1_800_000_000_000


def window(**fields: object) -> pb.TelemetryWindow:
    base: dict[str, object] = dict(
        schema_version=1, device_id="pi-01", seq=7, window_start_ms=NOW - 1_000, window_end_ms=NOW,
        inference_count=10, error_count=1, labelled_count=5, correct_count=4,
        latency_p50_us=100.0, latency_p95_us=300.0, cpu_percent=12.5,
    )  # fmt: skip
    base.update(fields)
    return pb.TelemetryWindow(**base)  # type: ignore[arg-type]


def test_an_honest_window_passes() -> None:
    check_upward(window(), NOW)
    check_upward(window(inference_count=0, error_count=0, labelled_count=0, correct_count=0,
                        latency_p50_us=0.0, latency_p95_us=0.0), NOW)  # fmt: skip
    check_upward(window(label_counts=[10, 10, 0, 3]), NOW)  # multilabel: 10 rows counted, per label its rows on


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ({"window_end_ms": NOW - 2_000}, "window_ends_before_start"),
        ({"window_start_ms": 0}, "window_too_long"),
        ({"window_end_ms": NOW + FUTURE_SKEW_MS + 1}, "from_the_future"),
        ({"error_count": 11}, "counts_contradict"),
        ({"correct_count": 6}, "counts_contradict"),  # correct > labelled: the API once showed accuracy 9.9
        ({"labelled_count": 11, "correct_count": 0}, "counts_contradict"),
        ({"label_counts": [11, 3]}, "counts_contradict"),  # more rows counted than inferred
        ({"label_counts": [8, 2, 9]}, "counts_contradict"),  # a label on in more rows than counted
        ({"latency_p50_us": 500.0}, "latency_contradicts"),
        ({"latency_p50_us": -1.0}, "latency_contradicts"),
        ({"cpu_percent": float("nan")}, "not_finite"),
        ({"cpu_percent": -3.0}, "out_of_range"),
        ({"inference_count": 2**64 - 1}, "out_of_range"),  # once a database traceback
        ({"rss_bytes": INT64_MAX + 1}, "out_of_range"),
        ({"device_id": "pi\x0001"}, "nul_in_text"),
    ],
)
def test_impossible_windows_are_refused_naming_the_rule(fields: dict[str, object], rule: str) -> None:
    with pytest.raises(ImplausibleMessage) as refused:
        check_upward(window(**fields), NOW)
    assert refused.value.rule == rule


def test_nested_and_repeated_fields_are_checked_too() -> None:
    nested = window()
    nested.model.version = "x" * 5_000
    with pytest.raises(ImplausibleMessage, match="model.version"):
        check_upward(nested, NOW)
    sketch = window()
    sketch.features.add(index=0, counts=[1, 2**63])
    with pytest.raises(ImplausibleMessage, match="features.counts"):
        check_upward(sketch, NOW)


def test_label_maps_are_checked_key_and_value() -> None:
    report = pb.ReportedState(device_id="pi-01", ts_ms=NOW)
    report.labels["site"] = "lab"
    check_upward(report, NOW)
    report.labels["bad\x00key"] = "v"
    with pytest.raises(ImplausibleMessage, match="nul_in_text"):
        check_upward(report, NOW)


@pytest.mark.parametrize(
    "make",
    [
        lambda ts: pb.ReportedState(device_id="d", ts_ms=ts),
        lambda ts: pb.Presence(device_id="d", ts_ms=ts, online=True),
        lambda ts: pb.LifecycleEvent(device_id="d", ts_ms=ts),
        lambda ts: pb.SampleBatch(device_id="d", samples=[pb.Sample(ts_ms=ts)]),
    ],
)
def test_a_far_future_timestamp_is_refused_on_every_message(make: Callable[[int], object]) -> None:
    check_upward(make(NOW + FUTURE_SKEW_MS), NOW)  # type: ignore[arg-type]
    with pytest.raises(ImplausibleMessage, match="from_the_future"):
        check_upward(make(NOW + FUTURE_SKEW_MS + 1), NOW)  # type: ignore[arg-type]


def test_sample_inputs_may_be_missing_values() -> None:
    batch = pb.SampleBatch(device_id="d", samples=[pb.Sample(input=[1.0, float("nan"), float("inf")], ts_ms=NOW)])
    check_upward(batch, NOW)
