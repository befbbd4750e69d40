"""One fake cloud for the agent's tests and benchmarks: publishes desired states, answers chunk requests
(cut by `protocols.chunking`, as the real chunk server does) and records what devices send.

It talks through any `Transport`: a MemoryTransport for unit tests (`FakeCloud.in_memory(broker)`), a
real MQTT client for integration tests and benchmarks. Faults can be injected per chunk index.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from edge_agent.transport import MemoryBroker, MemoryTransport, Transport
from protocols.assignment import manifest_digest
from protocols.chunking import ChunkLayout
from protocols.codes import ErrorCode, chunk_error
from protocols.topics import (
    Channel,
    artifact_chunk_filter,
    artifact_chunk_topic,
    device_topic,
    fleet_root,
    manifest_topic,
)
from protocols.v1 import messages_pb2 as pb
from support.releases import FLEET, Release, desired_state

MakeAgent = Callable[..., Any]  # the agent tests' make_agent fixture: make_agent(device_id="dev-1", **settings)
EVERY_DEVICE = f"{fleet_root(FLEET)}/dev/#"  # records everything devices send
CHUNK_REQUESTS = f"{fleet_root(FLEET)}/dev/+/artifact/req"  # answers chunk requests only


class FakeCloud:
    """Serves desired states and chunks over a transport, and records what devices send."""

    def __init__(
        self, transport: Transport, *, chunk_size: int = 16, topic_filter: str = EVERY_DEVICE, start: bool = True
    ) -> None:
        self.transport = transport
        self.chunk_size = chunk_size
        self.broker: MemoryBroker | None = None  # set by in_memory(): lets retained() look at the broker
        self.artifacts: dict[str, bytes] = {}
        self.drop_once: set[int] = set()  # chunk indexes lost the first time they are served
        self.corrupt: set[int] = set()  # chunk indexes whose bytes are flipped when served
        self.error_for: set[int] = set()  # chunk indexes answered with `error`
        self.paused = False  # record requests without answering them
        self.requests: list[pb.ArtifactChunkRequest] = []
        self.received: dict[str, list[bytes]] = {}  # topic -> payloads
        self._lock = threading.Lock()
        self._unanswered: list[pb.ArtifactChunkRequest] = []
        transport.set_message_handler(self._on_message)
        transport.subscribe(topic_filter)
        if start:
            transport.start()

    @classmethod
    def in_memory(cls, broker: MemoryBroker, chunk_size: int = 16) -> FakeCloud:
        cloud = cls(MemoryTransport(broker), chunk_size=chunk_size)
        cloud.broker = broker
        return cloud

    # -- what the cloud sends

    def layout(self, sha256: str) -> ChunkLayout:
        return ChunkLayout.for_bytes(self.artifacts[sha256], self.chunk_size)

    def location(self, sha256: str) -> pb.ArtifactLocation:
        return self.layout(sha256).location()

    def desired(self, device_id: str, release: Release, generation: int, deployment_id: str = "dep-1") -> bytes:
        self.artifacts.update(release.artifacts)
        state = desired_state(device_id, release, generation, deployment_id, self.chunk_size)
        return state.SerializeToString()

    def deploy(
        self, device_id: str, release: Release, generation: int, deployment_id: str = "dep-1", *,
        fanout: bool = False, withhold: frozenset[int] = frozenset(), by_digest: bool = False,
        manifest: bytes | None = None, cloud_capabilities: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        """Publish the desired state; with fanout, first every chunk (but those in withhold) retained on the
        fleet-wide topics, as `cloud.rollout.fanout` does, and name them in the desired state. With by_digest,
        leave the manifest out and first retain `manifest` (default: the release's signed manifest; b"":
        none) on its fleet-wide topic, as `cloud.rollout.manifests` does. cloud_capabilities: what the
        desired state says this cloud reads (`protocols.capabilities`; the real cloud's: CLOUD_CAPABILITIES)."""
        payload = self.desired(device_id, release, generation, deployment_id)
        if cloud_capabilities:
            state = pb.DesiredState.FromString(payload)
            state.cloud_capabilities.extend(cloud_capabilities)
            payload = state.SerializeToString()
        if by_digest:
            state = pb.DesiredState.FromString(payload)
            digest = manifest_digest(state.manifest)
            kept = state.manifest.SerializeToString() if manifest is None else manifest
            if kept:
                self.send(manifest_topic(digest, fleet=FLEET), kept, retain=True)
            state.ClearField("manifest")
            payload = state.SerializeToString()
        if fanout:
            state = pb.DesiredState.FromString(payload)
            for location in state.artifacts:
                data = self.artifacts[location.sha256]
                layout = ChunkLayout.for_bytes(data, self.chunk_size)
                for index in range(layout.total_chunks):
                    if index not in withhold:
                        topic = artifact_chunk_topic(location.sha256, self.chunk_size, index, fleet=FLEET)
                        self.send(topic, layout.chunk(data, index).SerializeToString(), retain=True)
                location.fanout_filter = artifact_chunk_filter(location.sha256, self.chunk_size, fleet=FLEET)
            payload = state.SerializeToString()
        self.transport.publish(device_topic(device_id, Channel.DESIRED, fleet=FLEET), payload, qos=1, retain=True)

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
        layout = ChunkLayout.for_bytes(data, self.chunk_size)
        for index in request.indexes:
            with self._lock:
                if index in self.drop_once:
                    self.drop_once.discard(index)
                    continue
            chunk = layout.chunk(data, index, request.request_id)
            if index in self.error_for:
                chunk.ClearField("data")
                chunk.error = chunk_error(ErrorCode.ARTIFACT_UNAVAILABLE, "test says no")
            elif index in self.corrupt:
                chunk.data = bytes(b ^ 0xFF for b in chunk.data)
            self.send(device_topic(request.device_id, Channel.ARTIFACT_DATA, fleet=FLEET), chunk.SerializeToString())

    def payloads(self, device_id: str, channel: Channel) -> list[bytes]:
        with self._lock:
            return list(self.received.get(device_topic(device_id, channel, fleet=FLEET), []))

    def events(self, device_id: str) -> list[pb.LifecycleEvent]:
        return [pb.LifecycleEvent.FromString(p) for p in self.payloads(device_id, Channel.EVENTS)]

    def event_kinds(self, device_id: str) -> list[str]:
        return [pb.EventKind.Name(e.kind).removeprefix("EVENT_KIND_") for e in self.events(device_id)]

    def chunks_requested(self) -> list[int]:
        with self._lock:
            return [i for r in self.requests for i in r.indexes]

    def retained(self, device_id: str, channel: Channel) -> bytes | None:
        assert self.broker is not None, "retained() needs the in-memory broker"
        found = self.broker.retained_for(device_topic(device_id, channel, fleet=FLEET))
        return found[0][1] if found else None


def is_state(state: Any, update_state: int, generation: int | None = None) -> bool:
    return state.update_state == update_state and (generation is None or state.desired_generation == generation)
