"""Desired states as devices check them: each carries the director's signed assignment and the trust
chain, verifies with `protocols.assignment.verify_desired`, and goes to the fleet's own topics; a rollback
is an ordinary new assignment; another fleet's traffic on the same broker is dropped."""

from __future__ import annotations

import time

from sqlalchemy import Engine
from sqlmodel import Session
from support.enrollment import enroll

from cloud import fleet
from cloud.db.tables import AssignmentRecord, DeploymentCreate
from cloud.monitoring import Ingestor
from cloud.mqtt.router import MessageRouter
from cloud.registry.artifacts import MemoryArtifactStore
from cloud.rollout import ChunkServer, Deployer, Director, plan
from edge_agent.transport import MemoryBroker, MemoryTransport
from protocols.assignment import manifest_digest, verify_desired
from protocols.roots import RootOfTrust
from protocols.topics import DEFAULT_FLEET, Channel, device_topic, trust_topic
from protocols.v1 import messages_pb2 as pb


def now_ms() -> int:
    return int(time.time() * 1000)


def deployer_on(engine: Engine, broker: MemoryBroker, director: Director) -> Deployer:
    transport = MemoryTransport(broker)
    transport.start()
    return Deployer(engine, transport, director=director, chunk_size_bytes=1024)


def desired(broker: MemoryBroker, device_id: str) -> pb.DesiredState:
    [(_topic, payload)] = broker.retained_for(device_topic(device_id, Channel.DESIRED, fleet=DEFAULT_FLEET))
    return pb.DesiredState.FromString(payload)


def pinned(director: Director) -> RootOfTrust:
    return RootOfTrust.pin(director.trust.roots[0], fleet=director.fleet)


def test_a_desired_state_verifies_the_way_a_device_checks_it(
    any_engine: Engine, director: Director, register
) -> None:
    broker = MemoryBroker()
    with Session(any_engine) as session:
        mv = register(session, "m")
    enroll(any_engine, "d1")
    deployment = deployer_on(any_engine, broker, director).deploy(DeploymentCreate(model_id="m", device_ids=["d1"]))
    state = desired(broker, "d1")
    verified = verify_desired(state, pinned(director), device_id="d1", last_counter=0, now_ms=now_ms())
    a = verified.assignment
    assert (a.fleet, a.device_id, a.deployment_id, a.counter) == (DEFAULT_FLEET, "d1", deployment.id, 1)
    assert a.manifest_sha256 == manifest_digest(state.manifest)
    assert a.expires_at_ms - a.issued_at_ms == director.assignment_valid_ms
    assert verified.manifest is not None and verified.manifest.version == mv.version
    with Session(any_engine) as session:
        record = session.get(AssignmentRecord, "d1")
        assert record is not None and (record.counter, record.expires_at_ms) == (1, a.expires_at_ms)


def test_a_rollback_is_a_new_assignment_the_device_accepts(
    any_engine: Engine, director: Director, register
) -> None:
    broker = MemoryBroker()
    with Session(any_engine) as session:
        register(session, "m")
        register(session, "m")
    deployer = deployer_on(any_engine, broker, director)
    enroll(any_engine, "d1")
    deployer.deploy(DeploymentCreate(model_id="m", version="2", device_ids=["d1"]))
    root = pinned(director)
    newer = verify_desired(desired(broker, "d1"), root, device_id="d1", last_counter=0, now_ms=now_ms())
    deployer.deploy(DeploymentCreate(model_id="m", version="1", device_ids=["d1"]))  # the operator rolls back
    older = verify_desired(
        desired(broker, "d1"), root, device_id="d1", last_counter=newer.assignment.counter, now_ms=now_ms()
    )
    assert older.assignment.counter == 2 and older.manifest is not None and older.manifest.sequence == 1


def test_a_redeployment_read_in_batches_records_and_sends_each_devices_next_assignment(
    any_engine: Engine, director: Director, register, monkeypatch
) -> None:
    # the plan reads the devices' assignment records a batch at a time (2 here), not one query per device
    monkeypatch.setattr(plan, "_IN_BATCH", 2)
    with Session(any_engine) as session:
        register(session, "m")
        register(session, "m")
    broker = MemoryBroker()
    deployer = deployer_on(any_engine, broker, director)
    devices = ["d1", "d2", "d3", "d4", "d5"]
    enroll(any_engine, *devices)
    deployer.deploy(DeploymentCreate(model_id="m", version="1", device_ids=devices[:3]))  # d4, d5: no record yet
    second = deployer.deploy(DeploymentCreate(model_id="m", version="2", device_ids=devices))
    root = pinned(director)
    for device_id in devices:
        expected = 2 if device_id in devices[:3] else 1
        state = desired(broker, device_id)
        verified = verify_desired(state, root, device_id=device_id, last_counter=expected - 1, now_ms=now_ms())
        assert (verified.assignment.counter, verified.assignment.deployment_id) == (expected, second.id)
        assert verified.manifest is not None and verified.manifest.version == "2"
        assert [a.chunk_size for a in state.artifacts] == [1024]
        with Session(any_engine) as session:
            record = session.get(AssignmentRecord, device_id)
            assert record is not None and (record.deployment_id, record.counter) == (second.id, expected)
            assert record.signed == state.assignment.SerializeToString()


def test_republish_sends_the_recorded_assignment_byte_for_byte(
    any_engine: Engine, director: Director, register
) -> None:
    with Session(any_engine) as session:
        register(session, "m")
    broker = MemoryBroker()
    deployer = deployer_on(any_engine, broker, director)
    enroll(any_engine, "d1")
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["d1"]))
    before = desired(broker, "d1").assignment
    fresh = MemoryBroker()  # a restarted broker that kept nothing
    deployer.publisher = transport = MemoryTransport(fresh)
    transport.start()
    assert deployer.republish_all() == 1
    assert desired(fresh, "d1").assignment == before
    [(_topic, chain)] = fresh.retained_for(trust_topic(DEFAULT_FLEET))
    assert pb.TrustChain.FromString(chain) == director.trust


def test_messages_of_another_fleet_are_counted_and_dropped(engine: Engine, director: Director, register) -> None:
    ghost = pb.ReportedState(schema_version=1, device_id="ghost", ts_ms=1)
    ours = pb.ReportedState(schema_version=1, device_id="real", ts_ms=1)
    enroll(engine, "real", "ghost")  # even an enrolled id is not ours to store on another fleet's topic
    ingestor = Ingestor(engine, fleet=DEFAULT_FLEET)
    ingestor.process([
        (device_topic("ghost", Channel.REPORTED, fleet="other-lab"), ghost.SerializeToString()),
        (device_topic("real", Channel.REPORTED, fleet=DEFAULT_FLEET), ours.SerializeToString()),
    ])  # fmt: skip
    assert ingestor.stats.foreign == 1
    with Session(engine) as session:
        assert fleet.get_device(session, "real").reported_ts_ms == 1
        assert fleet.get_device(session, "ghost").reported_ts_ms == 0

    sent: list[str] = []
    server = ChunkServer(engine, MemoryArtifactStore(), _Recorder(sent), fleet=DEFAULT_FLEET)
    request = pb.ArtifactChunkRequest(schema_version=1, device_id="d", sha256="a" * 64, indexes=[0])
    server.handle(device_topic("d", Channel.ARTIFACT_REQUEST, fleet="other-lab"), request.SerializeToString())
    assert server.stats.foreign == 1 and sent == []  # that fleet's cloud answers it, not us

    routed: list[str] = []
    router = MessageRouter(lambda t, p: routed.append(t), lambda t, p: routed.append(t), fleet=DEFAULT_FLEET)
    router.route(device_topic("d", Channel.TELEMETRY, fleet="other-lab"), b"")
    router.route(device_topic("d", Channel.TELEMETRY, fleet=DEFAULT_FLEET), b"")
    assert router.foreign == 1 and routed == [device_topic("d", Channel.TELEMETRY, fleet=DEFAULT_FLEET)]
    assert all(f.startswith(f"ef/v1/{DEFAULT_FLEET}/dev/+/") for f, _ in router.subscriptions)


class _Recorder:
    def __init__(self, sent: list[str]) -> None:
        self.sent = sent

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.sent.append(topic)
