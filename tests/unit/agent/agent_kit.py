"""Test kit for the agent's unit tests: signed releases of a tiny fake model, and a small in-process
"cloud" that publishes desired states and serves chunks over a MemoryBroker.

The fake model is real code behind the runtime's own interface (`runtime.FunctionModel`): the artifact
bytes are a JSON spec, and every label it predicts carries the release tag, so a test can tell which
model answered.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cloud.signing import init_keys, load_signer
from edge_agent.serving.runtime import FunctionModel, Prediction, RuntimeLoadError
from edge_agent.transport import MemoryBroker, MemoryTransport
from protocols import SCHEMA_VERSION
from protocols.signing import Signer
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

MakeAgent = Callable[..., Any]  # the make_agent fixture: make_agent(device_id="dev-1", **settings) -> Agent
N_FEATURES = 3
EDGES = [0.0, 0.25, 0.5, 0.75, 1.0]


@dataclass(frozen=True)
class Keys:
    directory: Path
    signer: Signer
    root_path: Path

    @property
    def root_public(self) -> bytes:
        return self.root_path.read_bytes()


def make_keys(directory: Path) -> Keys:
    root_path = init_keys(directory)
    return Keys(directory, load_signer(directory), root_path)


def model_bytes(tag: str, *, threshold: float = 0.5, broken: bool = False, delay_s: float = 0.0, pad: int = 0) -> bytes:
    spec = {"tag": tag, "threshold": threshold, "broken": broken, "delay_s": delay_s, "pad": "x" * pad}
    return json.dumps(spec).encode()


def labels_of(tag: str) -> list[str]:
    return [f"{tag}:neg", f"{tag}:pos"]


def fake_load_model(artifact: pb.Artifact, data: bytes, io: pb.IoSchema) -> FunctionModel:
    try:
        spec = json.loads(data)
    except ValueError as exc:
        raise RuntimeLoadError(f"not a fake model: {exc}") from None
    if spec["broken"]:
        raise RuntimeLoadError("this artifact cannot be loaded")
    tag, threshold, delay_s = spec["tag"], spec["threshold"], spec["delay_s"]
    neg, pos = labels_of(tag)

    def predict(x: np.ndarray) -> Prediction:
        if delay_s:
            time.sleep(delay_s)
        return Prediction([pos if row[0] > threshold else neg for row in x], None, None)

    return FunctionModel(io.n_features, predict, runtime=artifact.runtime)


@dataclass
class Release:
    signed: pb.SignedManifest
    manifest: pb.Manifest
    artifacts: dict[str, bytes]

    @property
    def sha256(self) -> str:
        return self.manifest.artifacts[0].sha256

    @property
    def tag(self) -> str:
        return self.manifest.version


def make_release(
    signer: Signer,
    tag: str,
    sequence: int,
    *,
    model_id: str = "demo",
    data: bytes | None = None,
    runtime: str = "onnxruntime",
    expires_at_ms: int = 0,
    wrong_self_test: bool = False,
    size_bytes: int | None = None,
    extra: list[tuple[str, bytes]] | None = None,
) -> Release:
    """A signed manifest for the fake model `tag`; `extra` adds (runtime, bytes) artifacts after it."""
    data = model_bytes(tag) if data is None else data
    artifacts = {}
    manifest = pb.Manifest(
        model_id=model_id,
        version=tag,
        sequence=sequence,
        created_at_ms=int(time.time() * 1000),
        expires_at_ms=expires_at_ms,
        io=pb.IoSchema(
            inputs=[pb.TensorSpec(name="x", dtype="float32", shape=[-1, N_FEATURES])],
            task=pb.TASK_CLASSIFICATION,
            class_labels=labels_of(tag),
            n_features=N_FEATURES,
        ),
    )
    for i, (rt, blob) in enumerate([(runtime, data), *(extra or [])]):
        sha = hashlib.sha256(blob).hexdigest()
        artifacts[sha] = blob
        manifest.artifacts.add(
            name=f"model-{i}.bin",
            sha256=sha,
            size_bytes=len(blob) if size_bytes is None or i else size_bytes,
            runtime=rt,
            predicted_output="label",
        )
    neg, pos = labels_of(tag)
    expected = [neg, pos] if wrong_self_test else [pos, neg]
    manifest.self_test.vectors.add(input=[0.9, 0.1, 0.1], expected_label=expected[0])
    manifest.self_test.vectors.add(input=[0.1, 0.9, 0.9], expected_label=expected[1])
    manifest.self_test.min_label_agreement = 1.0
    for index in range(N_FEATURES):
        manifest.reference.features.add(index=index, name=f"f{index}", bin_edges=EDGES, counts=[1, 1, 1, 1])
    manifest.reference.predictions.labels.extend(labels_of(tag))
    manifest.reference.predictions.counts.extend([2, 2])
    return Release(signer.sign(manifest), manifest, artifacts)


def location_of(data: bytes, chunk_size: int) -> pb.ArtifactLocation:
    sha = hashlib.sha256(data).hexdigest()
    total = -(-len(data) // chunk_size)
    return pb.ArtifactLocation(sha256=sha, size_bytes=len(data), chunk_size=chunk_size, total_chunks=total)


def desired_state(
    device_id: str, release: Release, generation: int, deployment_id: str = "dep-1", chunk_size: int = 16
) -> pb.DesiredState:
    return pb.DesiredState(
        schema_version=SCHEMA_VERSION,
        device_id=device_id,
        deployment_id=deployment_id,
        generation=generation,
        manifest=release.signed,
        artifacts=[location_of(data, chunk_size) for data in release.artifacts.values()],
        issued_at_ms=int(time.time() * 1000),
    )


def chunk_of(data: bytes, index: int, chunk_size: int = 16) -> pb.ArtifactChunk:
    location = location_of(data, chunk_size)
    offset = index * chunk_size
    return pb.ArtifactChunk(
        schema_version=SCHEMA_VERSION,
        sha256=location.sha256,
        index=index,
        total_chunks=location.total_chunks,
        offset=offset,
        data=data[offset : offset + chunk_size],
    )


@dataclass
class FakeCloud:
    """Serves desired states and chunks over a MemoryBroker, and records what devices send."""

    broker: MemoryBroker
    chunk_size: int = 16
    artifacts: dict[str, bytes] = field(default_factory=dict)
    drop_once: set[int] = field(default_factory=set)  # chunk indexes lost the first time they are served
    corrupt: set[int] = field(default_factory=set)  # chunk indexes whose bytes are flipped when served
    error_for: set[int] = field(default_factory=set)  # chunk indexes answered with `error`
    paused: bool = False  # record requests without answering them
    requests: list[pb.ArtifactChunkRequest] = field(default_factory=list)
    received: dict[str, list[bytes]] = field(default_factory=dict)  # topic -> payloads

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._unanswered: list[pb.ArtifactChunkRequest] = []
        self.transport = MemoryTransport(self.broker)
        self.transport.set_message_handler(self._on_message)
        self.transport.subscribe("ef/v1/dev/#")
        self.transport.start()

    # -- what the cloud sends

    def location(self, sha256: str) -> pb.ArtifactLocation:
        return location_of(self.artifacts[sha256], self.chunk_size)

    def desired(self, device_id: str, release: Release, generation: int, deployment_id: str = "dep-1") -> bytes:
        self.artifacts.update(release.artifacts)
        state = desired_state(device_id, release, generation, deployment_id, self.chunk_size)
        return state.SerializeToString()

    def deploy(self, device_id: str, release: Release, generation: int, deployment_id: str = "dep-1") -> None:
        payload = self.desired(device_id, release, generation, deployment_id)
        self.transport.publish(device_topic(device_id, Channel.DESIRED), payload, qos=1, retain=True)

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.transport.publish(topic, payload, qos=1, retain=retain)

    def resume(self) -> None:
        """Stop pausing and answer every request recorded meanwhile."""
        with self._lock:
            self.paused = False
            pending, self._unanswered = self._unanswered, []
        for request in pending:
            self._serve(request)

    # -- what devices send

    def _on_message(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.received.setdefault(topic, []).append(payload)
        if topic.endswith("/artifact/req"):
            request = pb.ArtifactChunkRequest.FromString(payload)
            with self._lock:
                self.requests.append(request)
                if self.paused:
                    self._unanswered.append(request)
                    return
            self._serve(request)

    def _serve(self, request: pb.ArtifactChunkRequest) -> None:
        data = self.artifacts[request.sha256]
        total = -(-len(data) // self.chunk_size)
        for index in request.indexes:
            with self._lock:
                if index in self.drop_once:
                    self.drop_once.discard(index)
                    continue
            offset = index * self.chunk_size
            chunk = pb.ArtifactChunk(
                schema_version=SCHEMA_VERSION,
                sha256=request.sha256,
                index=index,
                total_chunks=total,
                offset=offset,
                request_id=request.request_id,
            )
            if index in self.error_for:
                chunk.error = "artifact_unavailable: test says no"
            else:
                piece = data[offset : offset + self.chunk_size]
                if index in self.corrupt:
                    piece = bytes(b ^ 0xFF for b in piece)
                chunk.data = piece
            self.send(device_topic(request.device_id, Channel.ARTIFACT_DATA), chunk.SerializeToString())

    def payloads(self, device_id: str, channel: Channel) -> list[bytes]:
        with self._lock:
            return list(self.received.get(device_topic(device_id, channel), []))

    def events(self, device_id: str) -> list[pb.LifecycleEvent]:
        return [pb.LifecycleEvent.FromString(p) for p in self.payloads(device_id, Channel.EVENTS)]

    def event_kinds(self, device_id: str) -> list[str]:
        return [pb.EventKind.Name(e.kind).removeprefix("EVENT_KIND_") for e in self.events(device_id)]

    def chunks_requested(self) -> list[int]:
        with self._lock:
            return [i for r in self.requests for i in r.indexes]

    def retained(self, device_id: str, channel: Channel) -> bytes | None:
        found = self.broker.retained_for(device_topic(device_id, channel))
        return found[0][1] if found else None


def is_state(state: Any, update_state: int, generation: int | None = None) -> bool:
    return state.update_state == update_state and (generation is None or state.desired_generation == generation)
