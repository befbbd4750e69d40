"""Forged device traffic, published on a real broker to a real cloud stack: garbage and well-formed
messages from made-up ids (no device, no event, no telemetry appears), an enrolled device reporting labels
to slip into a label deployment (it does not), and messages that cannot be true (refused, while the
device's honest reports still apply)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import Session, select
from support import wait_until
from support.enrollment import enroll
from support.real_cloud import cloud

from cloud import fleet, rollout
from cloud.db.tables import DeploymentCreate, Device, EventRecord, SampleRecord, TelemetryRecord
from cloud.service import CloudService
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration
__all__ = ["cloud"]  # the real cloud's fixture (tests/support/real_cloud.py), not the fake one


@pytest.fixture
def attacker(cloud: CloudService, mqtt_broker: Any, make_transport: Callable[..., Any]) -> Callable[[str, bytes], None]:
    """publish(topic, payload) from a client on the cloud's broker (anonymous here: the attacker got in)."""
    transport, _inbox = make_transport(broker=mqtt_broker, max_queued=4096)
    return lambda topic, payload: transport.publish(topic, payload)


def now_ms() -> int:
    return int(time.time() * 1000)


def count(cloud: CloudService, table: type) -> int:
    with Session(cloud.engine) as session:
        return int(session.exec(select(func.count()).select_from(table)).one())


def settle(cloud: CloudService, received: int) -> None:
    assert cloud.ingestor is not None
    assert wait_until(lambda: cloud.ingestor.stats.received >= received, 30), cloud.ingestor.stats.snapshot()
    assert cloud.ingestor.drain(30)


def forged(device_id: str, kind: int, n: int) -> bytes:
    ts = now_ms()
    if kind == 0:
        return pb.ReportedState(schema_version=1, device_id=device_id, seq=n, ts_ms=ts, labels={"site": "lab"},
                                update_state=pb.UPDATE_STATE_ACTIVE).SerializeToString()
    if kind == 1:
        return pb.Presence(schema_version=1, device_id=device_id, online=True, ts_ms=ts).SerializeToString()
    if kind == 2:
        return pb.LifecycleEvent(schema_version=1, device_id=device_id, seq=n, ts_ms=ts,
                                 kind=pb.EVENT_KIND_ACTIVATED).SerializeToString()
    if kind == 3:
        return pb.TelemetryWindow(schema_version=1, device_id=device_id, seq=n, window_start_ms=ts - 1000,
                                  window_end_ms=ts, inference_count=5).SerializeToString()
    if kind == 4:
        return pb.SampleBatch(schema_version=1, device_id=device_id, seq=n,
                              samples=[pb.Sample(input=[1.0], ts_ms=ts)]).SerializeToString()
    return os.urandom(1 + n % 200)  # garbage  # fmt: skip


CHANNELS = [Channel.REPORTED, Channel.PRESENCE, Channel.EVENTS, Channel.TELEMETRY, Channel.SAMPLES]


def test_two_thousand_forged_messages_create_no_device_and_no_row(
    cloud: CloudService, attacker: Callable[[str, bytes], None]
) -> None:
    enroll(cloud, "pi-real")
    for n in range(2000):
        device_id, kind = f"forged-{n % 400}", n % 6
        attacker(device_topic(device_id, CHANNELS[kind % 5], fleet=cloud.fleet), forged(device_id, kind, n))
    settle(cloud, 2000)
    stats = cloud.ingestor.stats.snapshot()  # type: ignore[union-attr]
    assert stats["stored"] == 0 and stats["device_updates"] == 0
    assert stats["unenrolled"] + stats["malformed"] == 2000 and stats["unenrolled"] > 1500, stats
    assert count(cloud, Device) == 1 and count(cloud, EventRecord) == 0
    assert count(cloud, TelemetryRecord) == 0 and count(cloud, SampleRecord) == 0


def _model(cloud: CloudService) -> str:
    data = b"model-bytes" * 100
    manifest = pb.Manifest(model_id="m")
    manifest.artifacts.add(name="model.onnx", format=pb.ARTIFACT_FORMAT_ONNX, runtime="onnxruntime",
                           sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    return cloud.register_model_version(manifest, {"model.onnx": data}).version


def test_reported_labels_do_not_enroll_a_device_into_a_label_deployment(
    cloud: CloudService, attacker: Callable[[str, bytes], None]
) -> None:
    _model(cloud)
    enroll(cloud, "pi-lab", labels={"site": "lab"})
    enroll(cloud, "pi-field", labels={"site": "field"})
    assert cloud.deployer is not None
    deployment = cloud.deployer.deploy(DeploymentCreate(model_id="m", labels={"site": "lab"}))
    # the field device, and an id nobody enrolled, claim site=lab
    for n, device_id in enumerate(["pi-field", "pi-stranger"], start=1):
        attacker(device_topic(device_id, Channel.REPORTED, fleet=cloud.fleet), forged(device_id, 0, n))
    settle(cloud, 2)
    with Session(cloud.engine) as session:
        assert [t.device_id for t in rollout.targets_of(session, deployment.id)] == ["pi-lab"]
        assert fleet.get_device(session, "pi-field").labels == {"site": "field"}
        assert session.get(Device, "pi-stranger") is None


def test_impossible_messages_are_refused_and_honest_ones_still_apply(
    cloud: CloudService, attacker: Callable[[str, bytes], None]
) -> None:
    enroll(cloud, "pi-01")
    ts = now_ms()
    topic = device_topic("pi-01", Channel.TELEMETRY, fleet=cloud.fleet)

    def window(seq: int, **fields: Any) -> bytes:
        values: dict[str, Any] = {"window_start_ms": ts - 60_000, "window_end_ms": ts, "inference_count": 10}
        values.update(fields)
        return pb.TelemetryWindow(schema_version=1, device_id="pi-01", seq=seq, **values).SerializeToString()

    impossible = [
        window(1, window_start_ms=ts, window_end_ms=ts - 1),  # ends before it starts
        window(2, labelled_count=3, correct_count=4),  # more correct than labelled
        window(3, rss_bytes=2**63 + 5),  # uint64 above the int64 max
        window(4, window_start_ms=ts + 86_400_000, window_end_ms=ts + 86_400_000 + 1),  # tomorrow
    ]
    for payload in impossible:
        attacker(topic, payload)
    reported_topic = device_topic("pi-01", Channel.REPORTED, fleet=cloud.fleet)
    far_future = pb.ReportedState(schema_version=1, device_id="pi-01", seq=1, ts_ms=ts + 10 * 365 * 86_400_000,
                                  update_state=pb.UPDATE_STATE_FAILED)
    attacker(reported_topic, far_future.SerializeToString())
    settle(cloud, 5)
    assert cloud.ingestor is not None and cloud.ingestor.stats.implausible == 5
    assert set(cloud.ingestor.implausible_rules) == {
        "window_ends_before_start", "counts_contradict", "out_of_range", "from_the_future"
    }
    # the device's real reports still apply: the far-future one froze nothing
    honest = pb.ReportedState(schema_version=1, device_id="pi-01", seq=2, ts_ms=now_ms(),
                              update_state=pb.UPDATE_STATE_ACTIVE)
    attacker(reported_topic, honest.SerializeToString())
    attacker(topic, window(5))
    settle(cloud, 7)
    with Session(cloud.engine) as session:
        device = fleet.get_device(session, "pi-01")
        assert (device.update_state, device.reported_seq) == ("active", 2)
        assert [w.seq for w in session.exec(select(TelemetryRecord))] == [5]
