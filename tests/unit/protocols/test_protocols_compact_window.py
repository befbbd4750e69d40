"""The compact TelemetryWindow encoding: a busy 64-feature window fits in 1 KB, and the cloud's reader gets
the same histogram and sketches from it as from the old fields (both forms stay readable)."""

from __future__ import annotations

import numpy as np

from cloud.monitoring.ingest import telemetry_row
from protocols.telemetry_bins import LATENCY_BOUNDS_US, pack_features, pack_features_implied, sparse_pairs
from protocols.v1 import messages_pb2 as pb


def _figures() -> tuple[list[int], list[tuple[int, list[int]]]]:
    rng = np.random.default_rng(0)
    latency = [0] * (len(LATENCY_BOUNDS_US) + 1)
    for bucket in rng.integers(18, 26, 3000):  # a few neighbouring buckets, as a real model's calls fill
        latency[bucket] += 1
    sketches = [(i, rng.multinomial(120, [0.1] * 10).tolist()) for i in range(64)]  # 120 rows, 10 bins each
    sketches[5] = (5, [0] * 10)  # a feature all-missing in this window
    sketches[6] = (6, [120])  # a constant feature: one bin
    return latency, sketches


def test_a_64_feature_window_fits_in_1_kb_and_reads_back_as_the_old_encoding() -> None:
    latency, sketches = _figures()
    common = {"schema_version": 1, "device_id": "d1", "seq": 9, "window_start_ms": 1, "window_end_ms": 60_001,
              "model": pb.ModelRef(model_id="digits", version="3", sequence=3), "inference_count": 3000,
              "latency_p50_us": 412.5, "latency_p95_us": 800.0, "cpu_percent": 3.5, "rss_bytes": 8_000_000}  # fmt: skip
    profile = pb.PredictionProfile(labels=[str(i) for i in range(10)], counts=[12] * 10)
    old = pb.TelemetryWindow(**common, predictions=profile,
                             latency_us=pb.Histogram(bounds=LATENCY_BOUNDS_US, counts=latency),
                             features=[pb.FeatureSketch(index=i, counts=c) for i, c in sketches])  # fmt: skip
    new = pb.TelemetryWindow(**common, predictions=profile, latency_bins=sparse_pairs(latency),
                             feature_counts=pack_features(sketches))  # fmt: skip
    assert new.ByteSize() <= 1024 < old.ByteSize()
    old_row, new_row = telemetry_row("d1", old, 5), telemetry_row("d1", new, 5)
    assert new_row["latency_histogram"] == old_row["latency_histogram"]
    del old_row["feature_counts"]["5"]  # the all-empty feature is left out of the compact form
    assert new_row == old_row


def test_features_after_a_gap_keep_their_indexes() -> None:
    sketches = [(3, [1, 2]), (4, [5]), (9, [0, 7, 0])]
    window = pb.TelemetryWindow(feature_counts=pack_features(sketches))
    assert telemetry_row("d", window, 0)["feature_counts"] == {"3": [1, 2], "4": [5], "9": [0, 7, 0]}


def test_the_implied_form_leaves_each_full_features_last_bin_out_and_reads_back_the_same() -> None:
    latency, sketches = _figures()
    sketches[7] = (7, [60, 0, 59])  # a row with a missing value: 119 of 120 counted, all its bins sent
    sketches[9] = (9, [0] * 10)  # all missing: left out, as in feature_counts
    compact = pb.TelemetryWindow(feature_counts=pack_features(sketches))
    implied = pb.TelemetryWindow(feature_counts_implied=pack_features_implied(sketches, 120))
    expected = {str(i): c for i, c in sketches if any(c)}
    assert telemetry_row("d", compact, 0)["feature_counts"] == expected
    assert telemetry_row("d", implied, 0)["feature_counts"] == expected
    assert implied.ByteSize() <= compact.ByteSize() - 50  # a 1-byte count per full feature (61), less the rows


def test_implied_features_after_a_gap_keep_their_indexes() -> None:
    sketches = [(3, [1, 2]), (4, [3]), (9, [0, 3, 0]), (10, [1, 1])]
    window = pb.TelemetryWindow(feature_counts_implied=pack_features_implied(sketches, 3))
    assert telemetry_row("d", window, 0)["feature_counts"] == {"3": [1, 2], "4": [3], "9": [0, 3, 0], "10": [1, 1]}
