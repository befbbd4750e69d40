"""insert_ignore counts what it inserted, skips existing and repeated keys, and stores every column as an
ORM insert would (JSON, defaults of the columns a row leaves out): on SQLite and, with
EDGEFLEET_TEST_DATABASE_URL, on PostgreSQL (where it is one INSERT ... SELECT FROM unnest)."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session, select

from cloud.db import insert_ignore
from cloud.db.tables import Device, EventRecord, TelemetryRecord


def test_counts_only_new_keys_and_a_key_repeated_in_one_batch_once(any_engine: Engine) -> None:
    engine = any_engine
    rows = [{"device_id": "d", "seq": seq, "ts_ms": 7, "kind": "activated"} for seq in range(5)]
    with Session(engine) as session:
        assert insert_ignore(session, EventRecord, rows[:3], ["device_id", "seq"]) == 3
        assert insert_ignore(session, EventRecord, rows, ["device_id", "seq"]) == 2  # 0-2 were there
        assert insert_ignore(session, EventRecord, rows[:1], ["device_id", "seq"]) == 0
        twice = [{**rows[0], "seq": 9, "kind": "first"}, {**rows[0], "seq": 9, "kind": "second"}]
        assert insert_ignore(session, EventRecord, twice, ["device_id", "seq"]) == 1  # a key twice in one batch
        session.commit()
        stored = session.exec(select(EventRecord).order_by(EventRecord.seq)).all()
    assert [e.seq for e in stored] == [0, 1, 2, 3, 4, 9]
    assert {e.kind for e in stored if e.seq == 9} <= {"first", "second"}
    assert all(e.deployment_id == "" and e.error_code is None for e in stored)  # defaults and NULLs


def test_json_columns_and_defaults_round_trip(any_engine: Engine) -> None:
    engine = any_engine
    window = {
        "device_id": "d", "seq": 1, "window_start_ms": 1, "window_end_ms": 2, "latency_p50_us": 1.5,
        "latency_histogram": {"bounds": [100.0, 200.0], "counts": [4, 5, 6]},
        "feature_counts": {"0": [1, 2], "1": [3, 4]}, "prediction_counts": {"labels": ["a", "é"], "counts": [1, 2]},
    }  # fmt: skip
    with Session(engine) as session:
        assert insert_ignore(session, TelemetryRecord, [window], ["device_id", "seq"]) == 1
        devices = [{"id": "dev-1", "registered_at_ms": 5}, {"id": "dev-2", "registered_at_ms": 6}]
        assert insert_ignore(session, Device, devices, ["id"]) == 2
        session.commit()
        stored = session.exec(select(TelemetryRecord)).one()
        device = session.get(Device, "dev-1")
    assert stored.latency_histogram == window["latency_histogram"]
    assert stored.feature_counts == window["feature_counts"]
    assert stored.prediction_counts == window["prediction_counts"]
    assert (stored.latency_p50_us, stored.inference_count, stored.model_id) == (1.5, 0, "")
    assert stored.received_at_ms > 0  # its default factory ran
    assert device is not None and device.labels == {} and device.capabilities == [] and device.registered_at_ms == 5
    assert device.desired_generation == 0 and device.online is False
