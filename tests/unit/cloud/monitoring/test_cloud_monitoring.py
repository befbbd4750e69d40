from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from support.enrollment import enroll

from cloud.monitoring import Ingestor, device_drift, fleet_drift, histogram_quantile
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


def test_fleet_report_alerts_on_one_shifted_device_and_names_it(engine: Engine, register) -> None:
    with Session(engine) as session:
        register(session, "m")  # reference: 100 rows, features 0 and 1 in four equal bins, labels a/b 50/50
    devices = ["d0", "d1", "d2", "odd"]
    enroll(engine, *devices)
    clean, shifted = [52, 48, 51, 49], [10, 20, 70, 100]
    windows = [
        pb.TelemetryWindow(
            schema_version=1, device_id=d, seq=seq, window_start_ms=seq * 1000, window_end_ms=(seq + 1) * 1000,
            model=pb.ModelRef(model_id="m", version="1"),
            features=[pb.FeatureSketch(index=0, counts=clean),
                      pb.FeatureSketch(index=1, counts=shifted if d == "odd" else clean)],
            predictions=pb.PredictionProfile(labels=["a", "b"], counts=[99, 101]),
        )
        for d in devices for seq in (1, 2, 3)
    ]  # fmt: skip
    Ingestor(engine).process([(device_topic(w.device_id, Channel.TELEMETRY), w.SerializeToString()) for w in windows])
    with Session(engine) as session:
        fleet = fleet_drift(session, "m", "1")
        calm = device_drift(session, "d0")
        odd = device_drift(session, "odd")
    assert fleet.alert and fleet.attribution is not None
    assert [(a.device_id, a.features) for a in fleet.attribution.devices] == [("odd", [1])]
    lines = {line.device_id: line.drifted_features for line in fleet.devices}
    assert lines == {"d0": [], "d1": [], "d2": [], "odd": [1]}
    assert next(line for line in fleet.devices if line.device_id == "odd").drifted_windows == 3
    assert fleet.tests == 4 * 3 * 3 + 4 * 3 + 3  # windows, device ranges, the fleet sum: features 0, 1, predictions
    assert not calm.alert and calm.features[1].level == "stable" and not calm.predictions.drifted
    assert odd.alert and odd.features[1].drifted and odd.features[1].q_value is not None
