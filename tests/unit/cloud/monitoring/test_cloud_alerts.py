"""Drift and accuracy alerts: evaluated from stored telemetry and labelled samples, recorded once per
raise and clear (however many workers evaluate), exported to Prometheus with bounded labels."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlmodel import Session, select
from support.drift_windows import ingest_drift_windows
from support.enrollment import enroll

from cloud.db.tables import AlertRecord
from cloud.monitoring import Ingestor, alerts
from cloud.monitoring.alert_monitor import AlertMonitor
from cloud.monitoring.metrics import FleetCollector, metrics_registry
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

NOW_MS = 1_700_000_000_000


def _scrape(session: Session, **kwargs: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics_registry(FleetCollector(session, **kwargs))).decode()  # type: ignore[arg-type]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_drift_alert_is_raised_once_named_exported_and_cleared(any_engine: Engine, register) -> None:
    engine = any_engine
    with Session(engine) as session:
        register(session, "m")
    devices = ["d0", "d1", "d2", "odd"]
    enroll(engine, *devices)
    ingest_drift_windows(engine, devices, {"odd"}, NOW_MS - 120_000)
    clock = [NOW_MS]
    monitor = AlertMonitor(engine, clock=lambda: clock[0])
    other_worker = AlertMonitor(engine, clock=lambda: clock[0])

    (raised,) = monitor.tick()
    assert raised.event == "alert.raised" and raised.alert["kind"] == "drift"
    assert raised.alert["devices"] == ["odd"] and raised.alert["key"] == "drift:m@1"
    assert raised.alert["detail"]["drivers"][0]["features"] == [1]
    assert "odd" in raised.alert["summary"]
    assert other_worker.tick() == [] and monitor.tick() == []  # still true: nothing new to announce

    with Session(engine) as session:
        samples = _scrape(session, alert_counters=monitor.counters, max_alert_devices=5)
        listed = alerts.listing(session)
    assert samples[("edgefleet_alerts_active", (("kind", "drift"),))] == 1
    assert samples[("edgefleet_alerts_active", (("kind", "accuracy"),))] == 0
    assert samples[("edgefleet_alert_active", (("kind", "drift"), ("model_id", "m"), ("version", "1")))] == 1
    assert samples[("edgefleet_alert_devices", (("device_id", "odd"), ("kind", "drift")))] == 1
    assert samples[("edgefleet_alert_transitions_total", (("event", "raised"),))] == 1
    assert [(a["key"], a["active"]) for a in listed] == [("drift:m@1", True)]

    clock[0] = NOW_MS + 2 * 3_600_000  # the drifted telemetry is out of the lookback: nothing holds
    (cleared,) = monitor.tick()
    assert cleared.event == "alert.cleared" and cleared.alert["cleared_at_ms"] == clock[0]
    assert other_worker.tick() == []
    ingest_drift_windows(engine, devices, {"odd"}, clock[0] - 60_000)  # it comes back: the same row, raised again
    (again,) = other_worker.tick()
    assert again.event == "alert.raised" and again.alert["raised_at_ms"] == clock[0]
    with Session(engine) as session:
        assert len(session.exec(select(AlertRecord)).all()) == 1


def test_device_labels_are_capped(any_engine: Engine) -> None:
    engine = any_engine
    with Session(engine) as session:
        found = [alerts.Alert("drift", f"m{i}", "1", "s", [f"dev-{i}-{j}" for j in range(4)]) for i in range(5)]
        alerts.apply(session, found, clock=lambda: NOW_MS)
        session.commit()
        samples = _scrape(session, max_alert_devices=3, max_versions=2)
    named = {dict(k[1])["device_id"]: v for k, v in samples.items() if k[0] == "edgefleet_alert_devices"}
    assert len(named) == 4 and named["other"] == 17  # 3 by name, the other 17 summed
    versions = {dict(k[1])["model_id"]: v for k, v in samples.items() if k[0] == "edgefleet_alert_active"}
    assert versions == {"m0": 1, "m1": 1, "other": 3}


def _labelled(engine: Engine, device: str, right: int, wrong: int, p: float) -> None:
    rows = [("a", "a")] * right + [("a", "b")] * wrong
    batch = pb.SampleBatch(schema_version=1, device_id=device, seq=1, model=pb.ModelRef(model_id="m", version="1"),
                           samples=[pb.Sample(input=[0.0], prediction=pr, label=truth, ts_ms=NOW_MS - 3_600_000,
                                              inclusion_probability=p) for pr, truth in rows])  # fmt: skip
    Ingestor(engine, clock=lambda: NOW_MS).process([(device_topic(device, Channel.SAMPLES), batch.SerializeToString())])


def test_an_accuracy_drop_below_the_stated_accuracy_raises_an_accuracy_alert(engine: Engine, register) -> None:
    with Session(engine) as session:
        register(session, "m")  # the manifest states accuracy 0.95
    enroll(engine, "good", "bad")
    _labelled(engine, "good", 29, 1, 0.1)
    _labelled(engine, "bad", 10, 20, 0.1)
    with Session(engine) as session:
        found = alerts.evaluate(session, clock=lambda: NOW_MS)
    (alert,) = found
    assert alert.kind == "accuracy" and alert.devices == ["bad"]
    assert alert.detail["stated"] == 0.95 and alert.detail["high"] < 0.9
    assert alert.detail["accuracy"] == 39 / 60

    # too few labels to be sure: no alert, however bad they look
    lone = alerts.accuracy_alert("m", "1", _line(labelled=10, weighted=0.2, high=0.5), 0.95, alerts.DEFAULT_POLICY)
    assert lone is None
    # sure, but within the tolerated drop: no alert
    near = alerts.accuracy_alert("m", "1", _line(labelled=500, weighted=0.91, high=0.93), 0.95, alerts.DEFAULT_POLICY)
    assert near is None


def _line(*, labelled: int, weighted: float, high: float) -> alerts.feedback.AccuracyLine:
    return alerts.feedback.AccuracyLine("1", labelled, None, None, None, None, weighted=weighted,
                                        weighted_low=weighted - 0.01, weighted_high=high)  # fmt: skip
