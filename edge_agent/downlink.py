"""The downlink: turn an MQTT message the cloud sent to this device into an update event, or say why it
cannot be one (pure). (Named for the direction it parses, not "inbox", which the cloud uses for a router.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from edge_agent.errors import MalformedPayloadError
from edge_agent.update.events import ChunkReceived, DesiredReceived, Event, TrustReceived
from edge_agent.update.manifest_fetch import ManifestReceived
from protocols.assignment import manifest_digest
from protocols.topics import (
    Channel,
    Direction,
    TopicError,
    artifacts_root,
    parse_device_topic,
    parse_manifest_topic,
    trust_topic,
)
from protocols.v1 import messages_pb2 as pb


@dataclass(frozen=True)
class CommandReceived:
    """A `cmd` message: a SignedCommand for the agent itself (not the update machine) to verify."""

    payload: bytes


def parse_inbound(
    device_id: str, topic: str, payload: bytes, *, fleet: str
) -> Event | CommandReceived | ManifestReceived | None:
    """The event a message stands for; None for a message the agent need not act on (an empty retained
    desired state: clearing one is not signed, so it changes nothing). Raises MalformedPayloadError
    otherwise. Nothing here is trusted: the update machine verifies every desired state and trust chain
    before acting on it, the agent every command (protocols.commands)."""
    if topic == trust_topic(fleet):
        return TrustReceived(_decode(pb.TrustChain, payload, topic)) if payload else None
    manifest_sha256 = parse_manifest_topic(topic, fleet=fleet)
    if manifest_sha256 is not None:  # empty: the cloud cleared a retained manifest
        return _fanout_manifest(topic, manifest_sha256, payload) if payload else None
    if topic.startswith(artifacts_root(fleet) + "/"):
        return _fanout_chunk(topic, payload) if payload else None  # empty: the cloud cleared a retained chunk
    try:
        parsed = parse_device_topic(topic)
    except TopicError as exc:
        raise MalformedPayloadError(str(exc)) from None
    if parsed.fleet != fleet:
        raise MalformedPayloadError(f"message on {topic!r} is for fleet {parsed.fleet!r}, not {fleet!r}")
    if parsed.device_id != device_id:
        raise MalformedPayloadError(f"message on {topic!r} is for device {parsed.device_id!r}, not {device_id!r}")
    channel = parsed.channel
    if channel.spec.direction is not Direction.DOWN:
        raise MalformedPayloadError(f"{channel.value!r} is a device-to-cloud channel, not one the agent reads")
    if channel is Channel.DESIRED:
        if not payload:
            return None
        return DesiredReceived(_decode(pb.DesiredState, payload, topic))
    if channel is Channel.ARTIFACT_DATA:
        chunk = _decode(pb.ArtifactChunk, payload, topic)
        if len(chunk.sha256) != 64:
            said = f" (the cloud says: {chunk.error})" if chunk.error else ""
            raise MalformedPayloadError(f"artifact chunk without a sha256 ({chunk.sha256!r}){said}")
        return ChunkReceived(chunk)
    if channel is Channel.COMMAND:
        return CommandReceived(payload)
    return None


def _fanout_chunk(topic: str, payload: bytes) -> ChunkReceived:
    """A chunk from the fleet-wide topics (`.../art/{sha256}/{chunk_size}/{index}`): it must be the chunk
    its topic names; the update machine then checks it against the layout like any other."""
    chunk = _decode(pb.ArtifactChunk, payload, topic)
    *_, sha256, _chunk_size, index = topic.split("/")
    if chunk.error or chunk.sha256 != sha256 or str(chunk.index) != index:
        raise MalformedPayloadError(f"{topic}: carries chunk {chunk.index} of {chunk.sha256[:12]!r}")
    return ChunkReceived(chunk)


def _fanout_manifest(topic: str, sha256: str, payload: bytes) -> ManifestReceived:
    """A manifest from the fleet-wide topics: its signed bytes must hash to the digest its topic names (a
    planted or swapped one is refused here; the assignment's digest and the signature are checked later)."""
    signed = _decode(pb.SignedManifest, payload, topic)
    found = manifest_digest(signed)
    if found != sha256:
        raise MalformedPayloadError(f"{topic}: carries manifest {found[:12]}, not {sha256[:12]}")
    return ManifestReceived(sha256, signed)


M = TypeVar("M", bound=Message)


def _decode(message_type: type[M], payload: bytes, topic: str) -> M:
    try:
        return message_type.FromString(payload)
    except (DecodeError, ValueError) as exc:
        raise MalformedPayloadError(f"{topic}: not a {message_type.__name__}: {exc}") from None
