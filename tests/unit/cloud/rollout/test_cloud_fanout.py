"""One upload per rollout (cloud.rollout.fanout): each artifact published once, retained, on the fleet-wide
topics, by one process of several, and cleared once no open deployment needs it."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session, select
from support.enrollment import enroll

from cloud.db import TargetStatus
from cloud.db.tables import DeploymentCreate, DeploymentTarget, FanoutRecord
from cloud.registry.artifacts import MemoryArtifactStore
from cloud.rollout import Deployer, Director
from cloud.rollout.fanout import FanoutPublisher
from edge_agent.transport import MemoryBroker, MemoryTransport
from protocols.chunking import ChunkLayout
from protocols.topics import DEFAULT_FLEET, Channel, artifact_chunk_filter, device_topic
from protocols.v1 import messages_pb2 as pb

CHUNK = 1024
ARTIFACT = bytes(range(256)) * 10  # 2560 bytes: 3 chunks
SHA = hashlib.sha256(ARTIFACT).hexdigest()
FILTER = artifact_chunk_filter(SHA, CHUNK, fleet=DEFAULT_FLEET)


class Clock:
    def __init__(self) -> None:
        self.ms = 1_800_000_000_000

    def __call__(self) -> int:
        return self.ms


class Counting(MemoryTransport):
    """A cloud transport that counts what it publishes where."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.topics: list[str] = []
        self.start()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.topics.append(topic)
        super().publish(topic, payload, qos, retain)

    def fanout_publishes(self) -> list[str]:
        return [t for t in self.topics if "/art/" in t]


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _cloud(
    engine: Engine, store: MemoryArtifactStore, director: Director, broker: MemoryBroker, clock: Clock
) -> tuple[Deployer, Counting]:
    transport = Counting(broker)
    fanout = FanoutPublisher(engine, store, transport, fleet=DEFAULT_FLEET, clock=clock, keep_ms=1000)
    return Deployer(engine, transport, director=director, chunk_size_bytes=CHUNK, fanout=fanout), transport


@pytest.fixture
def model(any_engine: Engine, register) -> Engine:
    with Session(any_engine) as session:
        register(session, "m", {"model.onnx": ARTIFACT})
    enroll(any_engine, *(f"dev-{i}" for i in range(6)))
    return any_engine


def _desired(broker: MemoryBroker, device_id: str) -> pb.DesiredState:
    [(_topic, payload)] = broker.retained_for(device_topic(device_id, Channel.DESIRED))
    return pb.DesiredState.FromString(payload)


def test_an_artifact_is_published_once_however_many_devices_and_deployments(
    model: Engine, store: MemoryArtifactStore, director: Director, broker: MemoryBroker, clock: Clock
) -> None:
    deployer, transport = _cloud(model, store, director, broker, clock)
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["dev-0", "dev-1", "dev-2"]))
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["dev-3", "dev-4"]))
    assert len(transport.fanout_publishes()) == 3  # 3 chunks, once, for 5 devices in 2 deployments
    retained = sorted(broker.retained_for(FILTER))
    chunks = [pb.ArtifactChunk.FromString(p) for _, p in retained]
    assert hashlib.sha256(b"".join(c.data for c in sorted(chunks, key=lambda c: c.index))).hexdigest() == SHA
    layout = ChunkLayout.of(SHA, len(ARTIFACT), CHUNK)
    for chunk in chunks:
        layout.check(chunk)  # what a device checks
    assert all(_desired(broker, f"dev-{i}").artifacts[0].fanout_filter == FILTER for i in range(5))


def test_of_two_processes_on_one_database_only_one_publishes(
    model: Engine, store: MemoryArtifactStore, director: Director, broker: MemoryBroker, clock: Clock
) -> None:
    first, first_transport = _cloud(model, store, director, broker, clock)
    second, second_transport = _cloud(model, store, director, broker, clock)
    first.deploy(DeploymentCreate(model_id="m", device_ids=["dev-0"]))
    second.deploy(DeploymentCreate(model_id="m", device_ids=["dev-1"]))
    assert len(first_transport.fanout_publishes()) == 3 and second_transport.fanout_publishes() == []
    assert _desired(broker, "dev-1").artifacts[0].fanout_filter == FILTER


def test_chunks_are_cleared_once_no_open_deployment_needs_them_and_published_again_when_one_does(
    model: Engine, store: MemoryArtifactStore, director: Director, broker: MemoryBroker, clock: Clock
) -> None:
    deployer, transport = _cloud(model, store, director, broker, clock)
    assert deployer.fanout is not None
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["dev-0", "dev-1"]))
    clock.ms += 5000
    assert deployer.fanout.sweep() == 0 and len(broker.retained_for(FILTER)) == 3  # targets still pending
    with Session(model) as session:
        session.execute(update(DeploymentTarget).values(status=TargetStatus.SUCCEEDED))
        session.commit()
    assert deployer.fanout.sweep() == 1
    assert broker.retained_for(FILTER) == []
    with Session(model) as session:
        assert session.exec(select(FanoutRecord)).all() == []
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["dev-5"]))
    assert len(broker.retained_for(FILTER)) == 3 and len(transport.fanout_publishes()) == 9  # 3 + 3 cleared + 3


def test_a_freshly_used_artifact_is_not_cleared(
    model: Engine, store: MemoryArtifactStore, director: Director, broker: MemoryBroker, clock: Clock
) -> None:
    deployer, _ = _cloud(model, store, director, broker, clock)
    assert deployer.fanout is not None
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["dev-0"]))
    with Session(model) as session:
        session.execute(update(DeploymentTarget).values(status=TargetStatus.SUCCEEDED))
        session.commit()
    assert deployer.fanout.sweep() == 0  # within keep_ms of the deploy that pointed devices at it
    assert len(broker.retained_for(FILTER)) == 3


def test_missing_bytes_mean_no_fanout_filter_and_no_claim(
    model: Engine, director: Director, broker: MemoryBroker, clock: Clock
) -> None:
    deployer, transport = _cloud(model, MemoryArtifactStore(), director, broker, clock)  # the bytes are gone
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["dev-0"]))
    assert _desired(broker, "dev-0").artifacts[0].fanout_filter == ""  # the device asks per device instead
    assert broker.retained_for(FILTER) == []
    with Session(model) as session:
        assert session.exec(select(FanoutRecord)).all() == []


def test_republishing_after_a_broker_lost_its_retained_messages_publishes_again(
    model: Engine, store: MemoryArtifactStore, director: Director, broker: MemoryBroker, clock: Clock
) -> None:
    deployer, transport = _cloud(model, store, director, broker, clock)
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["dev-0", "dev-1"]))
    for topic, _ in broker.retained_for(FILTER):
        broker.publish(topic, b"", retain=True)  # as a restarted embedded broker: nothing retained
    deployer.republish_all()
    assert len(broker.retained_for(FILTER)) == 3 and len(transport.fanout_publishes()) == 6
