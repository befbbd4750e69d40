from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select
from support.enrollment import enroll

from cloud import fleet
from cloud.db.tables import Device, EventRecord, SampleRecord, TelemetryRecord
from cloud.monitoring import Ingestor
from cloud.monitoring.ingest import UrgentBudget
from cloud.mqtt.router import MessageRouter
from edge_agent.transport import MemoryBroker, MemoryTransport, Will
from protocols.topics import DEFAULT_FLEET, Channel, device_topic
from protocols.v1 import messages_pb2 as pb

NOW_MS = 1_700_000_000_000


ENROLLED = ("dev-1", "dev-2", "dev-9")


def clock() -> int:
    return NOW_MS


@pytest.fixture(autouse=True)
def _enrolled(request: pytest.FixtureRequest) -> None:
    """The devices these tests hear from are enrolled (the cloud drops messages from any other id)."""
    for name in ("any_engine", "engine"):
        if name in request.fixturenames:
            enroll(request.getfixturevalue(name), *ENROLLED)


def telemetry(device_id: str, seq: int, **fields: object) -> tuple[str, bytes]:
    window = pb.TelemetryWindow(
        schema_version=1,
        device_id=device_id,
        seq=seq,
        window_start_ms=(seq % 10**6) * 1000,
        window_end_ms=(seq % 10**6) * 1000 + 1000,
        model=pb.ModelRef(model_id="m", version="1", sequence=1),
        inference_count=10,
        latency_p50_us=100.0,
        latency_p95_us=200.0,
        features=[pb.FeatureSketch(index=0, counts=[1, 2, 3, 4])],
        **fields,  # type: ignore[arg-type]
    )
    return device_topic(device_id, Channel.TELEMETRY), window.SerializeToString()


def count(engine: Engine, model: type) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(model)).one()


def test_the_same_telemetry_twice_is_stored_once(any_engine: Engine) -> None:
    ingestor = Ingestor(any_engine, clock=clock)
    ingestor.process([telemetry("dev-1", 1), telemetry("dev-1", 1), telemetry("dev-1", 2)])
    ingestor.process([telemetry("dev-1", 2), telemetry("dev-2", 1)])
    assert count(any_engine, TelemetryRecord) == 3
    stats = ingestor.stats.snapshot()
    assert (stats["stored"], stats["duplicates"], stats["malformed"]) == (3, 2, 0)
    with Session(any_engine) as session:
        row = session.exec(select(TelemetryRecord).where(TelemetryRecord.seq == 2)).one()
        assert row.feature_counts == {"0": [1, 2, 3, 4]}
        assert (row.model_id, row.model_version, row.inference_count) == ("m", "1", 10)


def test_storing_telemetry_or_a_report_calls_on_stored_and_presence_does_not(any_engine: Engine) -> None:
    ingestor = Ingestor(any_engine, clock=clock)
    calls: list[int] = []
    ingestor.on_stored = lambda: calls.append(1)  # the service wakes its rollout controller with it
    presence = pb.Presence(schema_version=1, device_id="dev-1", online=True, ts_ms=NOW_MS)
    ingestor.process([(device_topic("dev-1", Channel.PRESENCE), presence.SerializeToString())])
    assert calls == []
    ingestor.process([telemetry("dev-1", 1)])
    assert calls == [1]
    ingestor.process([telemetry("dev-1", 1)])  # a duplicate stores nothing new
    assert calls == [1]
    report = pb.ReportedState(schema_version=1, device_id="dev-1", seq=1, ts_ms=NOW_MS - 10,
                              update_state=pb.UPDATE_STATE_ACTIVE)  # fmt: skip
    ingestor.process([(device_topic("dev-1", Channel.REPORTED), report.SerializeToString())])
    assert calls == [1, 1]


def test_storing_a_watched_devices_window_also_calls_on_watched_stored(any_engine: Engine) -> None:
    """The service wakes its rollout controller at once (without its gap between woken ticks) when an open
    wave's window is stored: the wave's gates may breach on it. Any other window, a report or a duplicate does
    not."""
    ingestor = Ingestor(any_engine, clock=clock)
    urgent: list[int] = []
    ingestor.on_watched_stored = lambda: urgent.append(1)
    ingestor.watch({"dev-2"})
    ingestor.process([telemetry("dev-1", 1)])
    report = pb.ReportedState(schema_version=1, device_id="dev-2", seq=1, ts_ms=NOW_MS - 10,
                              update_state=pb.UPDATE_STATE_ACTIVE)  # fmt: skip
    ingestor.process([(device_topic("dev-2", Channel.REPORTED), report.SerializeToString())])
    assert urgent == []
    ingestor.process([telemetry("dev-1", 2), telemetry("dev-2", 2)])
    assert urgent == [1]
    ingestor.process([telemetry("dev-2", 2)])  # a duplicate stores nothing new
    assert urgent == [1]
    ingestor.watch(set())  # the wave closed
    ingestor.process([telemetry("dev-2", 3)])
    assert urgent == [1]


def test_events_and_samples_are_idempotent(any_engine: Engine) -> None:
    event = pb.LifecycleEvent(
        schema_version=1,
        device_id="dev-1",
        seq=5,
        ts_ms=7,
        kind=pb.EVENT_KIND_SELF_TEST_FAILED,
        error=pb.ErrorInfo(code="self_test"),
    )
    batch = pb.SampleBatch(
        schema_version=1, device_id="dev-1", seq=3, samples=[pb.Sample(input=[1.0, 2.0], prediction="a", label="b")] * 2
    )
    messages = [
        (device_topic("dev-1", Channel.EVENTS), event.SerializeToString()),
        (device_topic("dev-1", Channel.SAMPLES), batch.SerializeToString()),
    ]
    ingestor = Ingestor(any_engine, clock=clock)
    ingestor.process(messages)
    ingestor.process(messages)
    assert count(any_engine, EventRecord) == 1
    assert count(any_engine, SampleRecord) == 2
    with Session(any_engine) as session:
        stored = session.exec(select(EventRecord)).one()
        assert (stored.kind, stored.error_code) == ("self_test_failed", "self_test")
        assert session.exec(select(SampleRecord)).first().input == [1.0, 2.0]


def test_payloads_without_device_or_schema_version_are_refused(any_engine: Engine) -> None:
    """Garbage that happens to parse as an empty message must not mark a device offline or store a window."""
    ingestor = Ingestor(any_engine, clock=clock)
    online = pb.Presence(schema_version=1, device_id="dev-1", online=True, ts_ms=NOW_MS)
    ingestor.process([(device_topic("dev-1", Channel.PRESENCE), online.SerializeToString())])
    no_version = pb.Presence(device_id="dev-1", online=False, ts_ms=NOW_MS + 1).SerializeToString()
    no_device = pb.TelemetryWindow(schema_version=1, seq=1, inference_count=3).SerializeToString()
    ingestor.process(
        [
            (device_topic("dev-1", Channel.PRESENCE), b"xx"),  # parses as an empty Presence
            (device_topic("dev-1", Channel.PRESENCE), no_version),
            (device_topic("dev-1", Channel.TELEMETRY), b"xx"),
            (device_topic("dev-1", Channel.TELEMETRY), no_device),
        ]
    )
    assert ingestor.stats.snapshot()["malformed"] == 4
    assert count(any_engine, TelemetryRecord) == 0
    with Session(any_engine) as session:
        assert fleet.get_device(session, "dev-1").online is True


def test_malformed_payloads_are_counted_and_skipped(any_engine: Engine) -> None:
    ingestor = Ingestor(any_engine, clock=clock)
    spoofed = pb.TelemetryWindow(schema_version=1, device_id="dev-2", seq=1).SerializeToString()
    ingestor.process(
        [
            (device_topic("dev-1", Channel.TELEMETRY), b"\xff\xff\xff not protobuf"),
            (device_topic("dev-1", Channel.TELEMETRY), spoofed),  # payload claims another device
            ("ef/v1/default/dev/dev-1/unknown", b"x"),
            ("elsewhere/topic", b"x"),
            (device_topic("dev-1", Channel.REPORTED), b""),  # a cleared retained message: ignored quietly
            telemetry("dev-1", 9),
        ]
    )
    assert count(any_engine, TelemetryRecord) == 1
    assert ingestor.stats.snapshot()["malformed"] == 4


def test_one_poison_message_costs_only_itself(any_engine: Engine) -> None:
    ingestor = Ingestor(any_engine, clock=clock)
    poison = telemetry("dev-1", 2**64 - 1)  # valid protobuf, but too large for a BIGINT column: refused unread
    ingestor.process([telemetry("dev-1", 1), poison, telemetry("dev-1", 3)])
    assert count(any_engine, TelemetryRecord) == 2
    assert ingestor.stats.snapshot()["implausible"] == 1 and ingestor.implausible_rules == {"out_of_range": 1}


def test_reported_state_and_presence_update_enrolled_devices(any_engine: Engine) -> None:
    report = pb.ReportedState(
        schema_version=1,
        device_id="dev-1",
        seq=2,
        ts_ms=NOW_MS - 10,
        active_model=pb.ModelRef(model_id="m", version="1", sequence=1, runtime="onnxruntime"),
        update_state=pb.UPDATE_STATE_FAILED,
        last_error=pb.ErrorInfo(code="bad_signature", message="nope"),
        agent_version="0.1.0",
        labels={"site": "north"},
        runtimes=["onnxruntime"],
        desired_generation=4,
    )
    older = pb.ReportedState(
        schema_version=1, device_id="dev-1", seq=1, ts_ms=NOW_MS - 20, update_state=pb.UPDATE_STATE_IDLE
    )
    online = pb.Presence(schema_version=1, device_id="dev-1", online=True, ts_ms=NOW_MS + 60_000)  # device clock ahead
    ingestor = Ingestor(any_engine, clock=clock)
    ingestor.process(
        [
            (device_topic("dev-1", Channel.REPORTED), report.SerializeToString()),
            (device_topic("dev-1", Channel.REPORTED), older.SerializeToString()),  # stale: ignored
            (device_topic("dev-1", Channel.PRESENCE), online.SerializeToString()),
        ]
    )
    with Session(any_engine) as session:
        device = fleet.get_device(session, "dev-1")
        assert device.online and device.last_seen_ms == NOW_MS  # never in the future
        assert device.labels == {"site": "north"}
        assert (device.active_model_id, device.active_version, device.update_state) == ("m", "1", "failed")
        assert (device.last_error_code, device.reported_generation) == ("bad_signature", 4)
    offline = pb.Presence(
        schema_version=1, device_id="dev-1", online=False, ts_ms=NOW_MS - 50
    )  # the will: written at connect
    ingestor.process([(device_topic("dev-1", Channel.PRESENCE), offline.SerializeToString())])
    with Session(any_engine) as session:
        assert not fleet.get_device(session, "dev-1").online
    assert count(any_engine, Device) == len(ENROLLED)


def test_worker_takes_messages_off_the_transport_thread(engine: Engine) -> None:
    broker = MemoryBroker()
    cloud = MemoryTransport(broker)
    ingestor = Ingestor(engine, clock=clock, batch_size=3)
    requests: list[tuple[str, bytes]] = []
    MessageRouter(ingestor.submit, lambda t, p: requests.append((t, p)), fleet=DEFAULT_FLEET).attach(cloud)
    cloud.start()
    ingestor.start()
    try:
        will = Will(
            device_topic("dev-9", Channel.PRESENCE),
            pb.Presence(schema_version=1, device_id="dev-9").SerializeToString(),
        )
        device = MemoryTransport(broker, will=will)
        device.start()
        online = pb.Presence(schema_version=1, device_id="dev-9", online=True, ts_ms=NOW_MS).SerializeToString()
        device.publish(device_topic("dev-9", Channel.PRESENCE), online, retain=True)
        for seq in range(1, 11):
            device.publish(*telemetry("dev-9", seq))
        device.publish(device_topic("dev-9", Channel.ARTIFACT_REQUEST), b"req")
        assert ingestor.drain(10)
        assert count(engine, TelemetryRecord) == 10
        with Session(engine) as session:
            assert fleet.get_device(session, "dev-9").online
        device.go_offline()  # the broker publishes the will
        assert ingestor.drain(10)
        with Session(engine) as session:
            assert not fleet.get_device(session, "dev-9").online
        assert [t for t, _ in requests] == [device_topic("dev-9", Channel.ARTIFACT_REQUEST)]
    finally:
        ingestor.stop()


@pytest.mark.parametrize("share_group", [None, "workers"])
def test_inbox_subscribes_to_every_device_to_cloud_channel(share_group: str | None) -> None:
    transport = MemoryTransport(MemoryBroker())
    MessageRouter(lambda t, p: None, lambda t, p: None, fleet=DEFAULT_FLEET, share_group=share_group).attach(transport)
    filters = set(transport._filters)
    assert len(filters) == 7  # every UP channel, feedback included
    assert all(f.startswith("$share/workers/") for f in filters) == bool(share_group)


def test_a_watched_devices_window_is_stored_ahead_of_a_burst(engine: Engine) -> None:
    """The rollout controller watches its open wave's devices: their windows jump the queue, in a batch of
    their own, so its gates do not wait behind the whole fleet's burst (a synchronised fleet's recovery from
    a bad canary waited ~2 s at load 15 for the canaries' windows to be stored). The rest keep their order."""
    ingestor = Ingestor(engine, clock=clock, batch_size=5)
    order: list[list[str]] = []
    gate = threading.Event()
    process = ingestor.process

    def recording(messages: list[tuple[str, bytes]]) -> None:
        gate.wait(10)  # the first batch holds the worker while the burst queues up behind it
        order.append([pb.TelemetryWindow.FromString(p).device_id + f":{pb.TelemetryWindow.FromString(p).seq}"
                      for _, p in messages])  # fmt: skip
        process(messages)

    ingestor.worker._handle_batch = recording  # type: ignore[method-assign]
    ingestor.watch({"dev-2"})
    ingestor.start()
    try:
        ingestor.submit(*telemetry("dev-1", 1))
        time.sleep(0.2)  # taken: the worker holds it at the gate
        for seq in range(2, 22):
            ingestor.submit(*telemetry("dev-1", seq))
        ingestor.submit(*telemetry("dev-2", 1))
        ingestor.submit(*telemetry("dev-2", 2))
        gate.set()
        assert ingestor.drain(10)
    finally:
        ingestor.stop()
    assert order[0] == ["dev-1:1"] and order[1] == ["dev-2:1", "dev-2:2"]  # next, before 20 older windows
    assert [m for batch in order[2:] for m in batch] == [f"dev-1:{s}" for s in range(2, 22)]  # in their order
    assert count(engine, TelemetryRecord) == 23


def test_a_watched_device_flooding_its_windows_jumps_the_queue_only_within_its_budget(engine: Engine) -> None:
    """A canary holding broker credentials could flood its telemetry topic: with every window of a watched
    device stored first, the rest of the fleet's windows would wait behind the flood for as long as it lasts.
    Past its small burst, a watched device's windows take the ordinary queue; another canary keeps its lane."""
    ingestor = Ingestor(engine, clock=clock)
    ingestor.watch({"canary-1", "canary-2"})
    flood = [ingestor._is_watched(telemetry("canary-1", seq)) for seq in range(1, 101)]
    assert 1 <= sum(flood) <= ingestor._urgent_budget.burst + 1  # the burst (and what refilled meanwhile)
    assert flood[0] and not flood[-1]
    assert ingestor._is_watched(telemetry("canary-2", 1))  # the other canary's window still goes first
    assert not ingestor._is_watched(telemetry("dev-9", 1))  # a device not watched never does
    ingestor.watch({"canary-2"})
    assert list(ingestor._urgent_budget._buckets) == ["canary-2"]  # buckets only for watched devices


def test_an_urgent_budget_refills_at_its_rate() -> None:
    now = [0.0]
    budget = UrgentBudget(burst=2, per_s=1.0, clock=lambda: now[0])
    assert [budget.take("d") for _ in range(3)] == [True, True, False]
    now[0] = 0.5
    assert not budget.take("d")  # half a token
    now[0] = 1.0
    assert budget.take("d") and not budget.take("d")
    now[0] = 100.0
    assert [budget.take("d") for _ in range(3)] == [True, True, False]  # capped at the burst
