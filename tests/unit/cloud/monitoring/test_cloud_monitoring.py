from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from support.enrollment import enroll

from cloud.monitoring import Ingestor, device_drift, histogram_quantile
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb


def test_histogram_quantile_interpolates_within_a_bucket() -> None:
    bounds, counts = [100.0, 200.0, 400.0], [0, 10, 10, 0]
    assert histogram_quantile(bounds, counts, 0.5) == pytest.approx(200.0)
    assert histogram_quantile(bounds, counts, 0.25) == pytest.approx(150.0)
    assert histogram_quantile(bounds, counts, 0.95) == pytest.approx(380.0)


def test_histogram_quantile_edges() -> None:
    assert histogram_quantile([100.0], [0, 5], 0.5) == 100.0  # open-ended bucket: its lower bound
    assert histogram_quantile([100.0], [4, 0], 0.5) == pytest.approx(50.0)
    assert histogram_quantile([100.0], [0, 0], 0.5) is None
    assert histogram_quantile([100.0, 200.0], [1, 1], 0.5) is None  # malformed: needs len(bounds) + 1 counts


def test_sketches_over_other_bins_are_ignored_not_fatal(engine: Engine, register) -> None:
    with Session(engine) as session:
        register(session, "m")  # reference: features 0 and 1, four bins each
    enroll(engine, "d")
    windows = [
        pb.TelemetryWindow(schema_version=1, device_id="d", seq=1, model=pb.ModelRef(model_id="m", version="1"),
                           features=[pb.FeatureSketch(index=0, counts=[5, 5, 5, 5])]),
        pb.TelemetryWindow(schema_version=1, device_id="d", seq=2, model=pb.ModelRef(model_id="m", version="1"),
                           features=[pb.FeatureSketch(index=0, counts=[1, 2]), pb.FeatureSketch(index=7, counts=[1])]),
    ]  # fmt: skip
    Ingestor(engine).process([(device_topic("d", Channel.TELEMETRY), w.SerializeToString()) for w in windows])
    with Session(engine) as session:
        report = device_drift(session, "d")
    assert report.ignored_sketches == 2 and report.windows == 2
    assert report.features[0].n_observed == 20 and report.features[0].level == "stable"
    assert report.features[1].level == "no_data"
