from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from support.enrollment import enroll

from cloud.db.tables import DeploymentCreate
from cloud.registry.artifacts import MemoryArtifactStore
from cloud.rollout import Deployer, Director
from cloud.rollout.chunk_server import ChunkServer
from edge_agent.transport import MemoryBroker, MemoryTransport
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

CHUNK = 1024
ARTIFACT = bytes(range(256)) * 10  # 2560 bytes: 3 chunks
SHA = hashlib.sha256(ARTIFACT).hexdigest()


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, pb.ArtifactChunk]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        assert qos == 1 and not retain
        self.sent.append((topic, pb.ArtifactChunk.FromString(payload)))

    def chunks(self) -> list[pb.ArtifactChunk]:
        return [c for _, c in self.sent]


@pytest.fixture
def setup(
    engine: Engine, store: MemoryArtifactStore, register, director: Director
) -> tuple[ChunkServer, Recorder]:
    with Session(engine) as session:
        register(session, "m", {"model.onnx": ARTIFACT})
        register(session, "other", {"other.onnx": b"secret model"})
    cloud = MemoryTransport(MemoryBroker())
    cloud.start()
    deployer = Deployer(engine, cloud, director=director, chunk_size_bytes=CHUNK)
    enroll(engine, "dev-1")
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["dev-1"]))
    recorder = Recorder()
    return ChunkServer(engine, store, recorder, max_indexes=4), recorder


def ask(server: ChunkServer, device_id: str, sha: str, indexes: list[int], request_device: str | None = None) -> None:
    request = pb.ArtifactChunkRequest(
        device_id=device_id if request_device is None else request_device, request_id="r1", sha256=sha, indexes=indexes
    )
    server.handle(device_topic(device_id, Channel.ARTIFACT_REQUEST), request.SerializeToString())


def test_an_entitled_device_gets_every_chunk_and_can_reassemble_the_artifact(setup) -> None:
    server, recorder = setup
    ask(server, "dev-1", SHA, [2, 0, 1])
    assert {t for t, _ in recorder.sent} == {device_topic("dev-1", Channel.ARTIFACT_DATA)}
    chunks = sorted(recorder.chunks(), key=lambda c: c.index)
    assert [(c.index, c.offset, len(c.data), c.total_chunks, c.error) for c in chunks] == [
        (0, 0, 1024, 3, ""), (1, 1024, 1024, 3, ""), (2, 2048, 512, 3, ""),
    ]  # fmt: skip
    assert all(c.request_id == "r1" and c.sha256 == SHA for c in chunks)
    assert hashlib.sha256(b"".join(c.data for c in chunks)).hexdigest() == SHA
    assert server.stats.snapshot()["chunks_sent"] == 3


def test_entitlement_is_per_device_and_per_deployment(setup, store: MemoryArtifactStore) -> None:
    server, recorder = setup
    ask(server, "dev-2", SHA, [0])  # not a target of the deployment
    other_sha = hashlib.sha256(b"secret model").hexdigest()
    ask(server, "dev-1", other_sha, [0])  # registered but never deployed to dev-1
    ask(server, "dev-1", "ab" * 32, [0])  # unknown to the cloud
    errors = [c.error.split(":")[0] for c in recorder.chunks()]
    assert errors == ["not_entitled", "not_entitled", "unknown_artifact"]
    assert not any(c.data for c in recorder.chunks())


def test_out_of_bounds_and_excess_indexes_get_errors(setup) -> None:
    server, recorder = setup
    ask(server, "dev-1", SHA, [3, 0, 1, 2, 0])  # 3 is past the end; the 5th index is over max_indexes=4
    results = [(c.index, c.error.split(":")[0]) for c in recorder.chunks()]
    assert results == [(3, "bad_index"), (0, ""), (1, ""), (2, ""), (0, "too_many_indexes")]


def test_malformed_requests_are_answered_with_an_error_when_possible(setup) -> None:
    server, recorder = setup
    server.handle(device_topic("dev-1", Channel.ARTIFACT_REQUEST), b"\xff\xff not protobuf")
    ask(server, "dev-1", "not-a-digest", [0])
    ask(server, "dev-1", SHA, [])
    ask(server, "dev-1", SHA, [0], request_device="dev-2")
    server.handle("garbage/topic", b"")  # no device to answer: only counted
    assert [c.error.split(":")[0] for c in recorder.chunks()] == [
        "malformed_request", "malformed_request", "malformed_request", "device_mismatch",
    ]  # fmt: skip
    assert server.stats.snapshot()["malformed"] == 5


def test_a_missing_artifact_file_is_reported_not_crashed_on(engine: Engine, register, director: Director) -> None:
    with Session(engine) as session:
        register(session, "m", {"model.onnx": ARTIFACT})
    cloud = MemoryTransport(MemoryBroker())
    cloud.start()
    deployer = Deployer(engine, cloud, director=director, chunk_size_bytes=CHUNK)
    enroll(engine, "dev-1")
    deployer.deploy(DeploymentCreate(model_id="m", device_ids=["dev-1"]))
    recorder = Recorder()
    server = ChunkServer(engine, MemoryArtifactStore(), recorder)  # an empty store: the bytes are gone
    ask(server, "dev-1", SHA, [0])
    assert recorder.chunks()[0].error.startswith("artifact_unavailable")


def test_requests_are_served_off_the_transport_thread(setup) -> None:
    server, recorder = setup
    server.start()
    try:
        request = pb.ArtifactChunkRequest(device_id="dev-1", sha256=SHA, indexes=[0, 1, 2])
        for _ in range(5):
            server.submit(device_topic("dev-1", Channel.ARTIFACT_REQUEST), request.SerializeToString())
        assert server.drain(10)
    finally:
        server.stop()
    assert len(recorder.sent) == 15


def test_a_full_outgoing_queue_is_waited_out_not_dropped(setup) -> None:
    from edge_agent.transport import TransportError

    server, recorder = setup
    failures = iter([True, True, False, False, False])

    class Flaky:
        def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
            if next(failures):
                raise TransportError("outgoing queue full")
            recorder.publish(topic, payload, qos, retain)

    server.publisher = Flaky()
    ask(server, "dev-1", SHA, [0, 1, 2])
    assert [c.index for c in recorder.chunks()] == [0, 1, 2]


def test_requests_of_devices_another_process_owns_are_left_to_it(setup, engine: Engine, store) -> None:
    _server, recorder = setup
    server = ChunkServer(engine, store, recorder, owns=lambda device_id: device_id != "dev-1")
    ask(server, "dev-1", SHA, [0])
    assert recorder.sent == [] and server.stats.snapshot()["not_mine"] == 1
