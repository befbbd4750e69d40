"""What ingestion refuses to store: anything from a device without live credentials (dropped, counted as
`unenrolled`, decided by one query per batch), and messages that cannot be true (`implausible`, per rule,
logged once per rule). Labels fixed at enrollment beat the labels a device reports."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine, event, func
from sqlmodel import Session, select
from support.enrollment import enroll

from cloud import fleet
from cloud.db.tables import Device, EventRecord, SampleRecord, TelemetryRecord
from cloud.identity.enrollment import revoke_device
from cloud.monitoring import Ingestor
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb
from protocols.validation import FUTURE_SKEW_MS

NOW_MS = 1_700_000_000_000


def clock() -> int:
    return NOW_MS


def count(engine: Engine, model: type) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(model)).one()


def window(device_id: str, seq: int, **fields: object) -> tuple[str, bytes]:
    values: dict[str, object] = {"window_start_ms": NOW_MS - 60_000, "window_end_ms": NOW_MS, "inference_count": 10}
    values.update(fields)
    message = pb.TelemetryWindow(schema_version=1, device_id=device_id, seq=seq, **values)  # type: ignore[arg-type]
    return device_topic(device_id, Channel.TELEMETRY), message.SerializeToString()


def reported(device_id: str, **fields: object) -> tuple[str, bytes]:
    message = pb.ReportedState(schema_version=1, device_id=device_id, **fields)  # type: ignore[arg-type]
    return device_topic(device_id, Channel.REPORTED), message.SerializeToString()


def every_kind(device_id: str) -> list[tuple[str, bytes]]:
    event_ = pb.LifecycleEvent(schema_version=1, device_id=device_id, seq=1, ts_ms=NOW_MS, kind=pb.EVENT_KIND_ACTIVATED)
    samples = pb.SampleBatch(schema_version=1, device_id=device_id, seq=1, samples=[pb.Sample(input=[1.0])])
    presence = pb.Presence(schema_version=1, device_id=device_id, online=True, ts_ms=NOW_MS)
    return [
        window(device_id, 1), reported(device_id, ts_ms=NOW_MS, labels={"site": "x"}),
        (device_topic(device_id, Channel.EVENTS), event_.SerializeToString()),
        (device_topic(device_id, Channel.SAMPLES), samples.SerializeToString()),
        (device_topic(device_id, Channel.PRESENCE), presence.SerializeToString()),
    ]  # fmt: skip


def test_messages_from_unenrolled_devices_leave_no_row(any_engine: Engine) -> None:
    enroll(any_engine, "pi-01")
    ingestor = Ingestor(any_engine, clock=clock)
    ingestor.process(every_kind("stranger") + every_kind("pi-01"))
    stats = ingestor.stats.snapshot()
    assert (stats["unenrolled"], stats["stored"], stats["device_updates"]) == (5, 3, 2)
    with Session(any_engine) as session:
        assert [d.id for d in session.exec(select(Device))] == ["pi-01"]
        for table in (TelemetryRecord, EventRecord, SampleRecord):
            assert {r.device_id for r in session.exec(select(table))} == {"pi-01"}


def test_a_revoked_device_is_dropped_from_then_on(any_engine: Engine) -> None:
    enroll(any_engine, "pi-01")
    ingestor = Ingestor(any_engine, clock=clock)
    ingestor.process([window("pi-01", 1)])
    with Session(any_engine) as session:
        assert revoke_device(session, "pi-01")
        session.commit()
    ingestor.process([window("pi-01", 2), reported("pi-01", ts_ms=NOW_MS, update_state=pb.UPDATE_STATE_FAILED)])
    assert count(any_engine, TelemetryRecord) == 1 and ingestor.stats.unenrolled == 2
    with Session(any_engine) as session:
        assert fleet.get_device(session, "pi-01").update_state == "unknown"


def test_the_enrolled_check_is_one_query_per_batch(engine: Engine) -> None:
    enroll(engine, *(f"pi-{i:02d}" for i in range(20)))
    statements: list[str] = []

    def seen(_conn, _cursor, statement: str, *_args: object) -> None:  # type: ignore[no-untyped-def]
        if "device_credential" in statement:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        Ingestor(engine, clock=clock).process(
            [window(f"pi-{i % 20:02d}", i) for i in range(200)] + [window(f"ghost-{i}", 1) for i in range(50)]
        )
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(statements) == 1 and count(engine, TelemetryRecord) == 200


def test_enrolled_labels_win_over_reported_ones(any_engine: Engine) -> None:
    enroll(any_engine, "pi-01", labels={"site": "lab"})
    Ingestor(any_engine, clock=clock).process(
        [reported("pi-01", ts_ms=NOW_MS, labels={"site": "prod", "rack": "7"})]
    )
    with Session(any_engine) as session:
        assert fleet.get_device(session, "pi-01").labels == {"site": "lab", "rack": "7"}


@pytest.mark.parametrize(
    ("message", "rule"),
    [
        (window("pi-01", 1, window_start_ms=NOW_MS, window_end_ms=NOW_MS - 1), "window_ends_before_start"),
        (window("pi-01", 2, labelled_count=5, correct_count=6), "counts_contradict"),
        (window("pi-01", 3, rss_bytes=2**63), "out_of_range"),
        (window("pi-01", 4, window_end_ms=NOW_MS + FUTURE_SKEW_MS + 1), "from_the_future"),
        (reported("pi-01", ts_ms=NOW_MS + 86_400_000), "from_the_future"),
        (window("pi-01", 5, latency_p50_us=float("nan")), "not_finite"),
    ],
)
def test_implausible_messages_are_refused_and_counted_by_rule(any_engine: Engine, message, rule: str) -> None:  # type: ignore[no-untyped-def]
    enroll(any_engine, "pi-01")
    ingestor = Ingestor(any_engine, clock=clock)
    ingestor.process([message])
    assert ingestor.stats.implausible == 1 and ingestor.implausible_rules == {rule: 1}
    assert count(any_engine, TelemetryRecord) == 0 and ingestor.stats.device_updates == 0


def test_a_far_future_report_cannot_freeze_the_device(any_engine: Engine) -> None:
    enroll(any_engine, "pi-01")
    ingestor = Ingestor(any_engine, clock=clock)
    ten_years_ahead = NOW_MS + 10 * 365 * 86_400_000
    ingestor.process([reported("pi-01", seq=1, ts_ms=ten_years_ahead, update_state=pb.UPDATE_STATE_FAILED)])
    ingestor.process([reported("pi-01", seq=2, ts_ms=NOW_MS - 1000, update_state=pb.UPDATE_STATE_ACTIVE)])
    with Session(any_engine) as session:
        device = fleet.get_device(session, "pi-01")
        assert (device.update_state, device.reported_seq) == ("active", 2)


def test_each_rule_is_logged_once(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    enroll(engine, "pi-01")
    ingestor = Ingestor(engine, clock=clock)
    bad = [window("pi-01", i, window_start_ms=NOW_MS, window_end_ms=NOW_MS - 1) for i in range(50)]
    with caplog.at_level(logging.WARNING, logger="cloud.monitoring.ingest"):
        ingestor.process(bad)
        ingestor.process(bad + [window("pi-01", 99, labelled_count=2, correct_count=3)])
    refusals = [r for r in caplog.records if "implausible" in r.getMessage()]
    assert len(refusals) == 2
    assert ingestor.implausible_rules == {"window_ends_before_start": 100, "counts_contradict": 1}
