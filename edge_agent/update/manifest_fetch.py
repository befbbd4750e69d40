"""Desired states whose manifest is read by digest: held until the manifest comes, then whole (pure).

A cloud that knows this agent reads manifests by digest (`protocols.capabilities.MANIFEST_BY_DIGEST`)
leaves the signed manifest out of the desired state; the one the assignment names is retained once for
the fleet on `protocols.topics.manifest_topic(digest)`. The agent holds such a desired state here,
subscribes to that one topic, and when the manifest comes (its bytes hashing to the digest: the downlink
checks that) hands the update machine the desired state with the manifest put in. The machine verifies it
exactly as one that carried its manifest: the signed assignment must name this digest and a targets key
must have signed the bytes, so a device never acts on a manifest it was not assigned.

Nothing is trusted before that: the digest to wait for is read from the assignment unverified, which at
worst subscribes the device to one read-only topic of its own fleet. A manifest that does not come within
`wait_s` (`AgentSettings.manifest_timeout_s`) of the subscription being made on a live connection is
reported as today's `not_assigned` refusal (the machine refuses the desired state without it), and the
wait goes on: the manifest is still taken if it comes later. One desired state is held at a time; a
newer one replaces it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from edge_agent.update.events import DesiredReceived
from protocols.topics import manifest_topic
from protocols.v1 import messages_pb2 as pb


@dataclass(frozen=True)
class ManifestReceived:
    """A SignedManifest from the fleet-wide manifest topics whose signed bytes hash to the digest its topic
    names (checked by the downlink); not trusted until verified with the desired state that names it."""

    sha256: str
    signed: pb.SignedManifest


def received_digest(desired: pb.DesiredState) -> str:
    """The digest the update machine remembers a verified desired state by (as the broker delivers it)."""
    return hashlib.sha256(desired.SerializeToString(deterministic=True)).hexdigest()


def wanted_manifest(desired: pb.DesiredState) -> str | None:
    """The manifest digest to read for desired: None when it carries its manifest, names none, or cannot
    name one (the machine then refuses it as it would any)."""
    if desired.HasField("manifest") or not desired.HasField("assignment"):
        return None
    assignment = pb.Assignment()
    try:
        assignment.ParseFromString(desired.assignment.assignment)
    except DecodeError:
        return None
    return assignment.manifest_sha256 or None


@dataclass
class _Held:
    desired: pb.DesiredState
    sha256: str
    topic: str
    received_sha256: str
    since_s: float | None  # None until subscribed on a live connection
    told: bool = False  # the missing manifest was reported once already


class ManifestFetch:
    def __init__(self, fleet: str, *, wait_s: float) -> None:
        self.fleet = fleet
        self.wait_s = wait_s
        self._held: _Held | None = None

    @property
    def topic(self) -> str | None:
        """The manifest topic subscribed to for the held desired state."""
        return self._held.topic if self._held else None

    def hold(self, desired: pb.DesiredState, sha256: str, received_sha256: str, connected: bool, now_s: float) -> str:
        """Hold desired until the manifest `sha256` comes; returns the topic to subscribe to. Raises
        TopicError when sha256 is not a digest (the machine then refuses the desired state as it is)."""
        topic = manifest_topic(sha256, fleet=self.fleet)
        self._held = _Held(desired, sha256, topic, received_sha256, now_s if connected else None)
        return topic

    def connected(self, now_s: float) -> None:
        """The (re)subscription brings the retained manifest again: the wait starts over."""
        if self._held is not None:
            self._held.since_s = now_s

    def release(self) -> str | None:
        """Stop waiting (a desired state that carries its manifest came); returns the topic to leave."""
        held, self._held = self._held, None
        return held.topic if held else None

    def received(self, manifest: ManifestReceived) -> DesiredReceived | None:
        """The held desired state with its manifest put in, when this is the manifest it waits for."""
        held = self._held
        if held is None or manifest.sha256 != held.sha256:
            return None
        self._held = None
        whole = pb.DesiredState()
        whole.CopyFrom(held.desired)
        whole.manifest.CopyFrom(manifest.signed)
        return DesiredReceived(whole, received_sha256=held.received_sha256)

    def overdue(self, now_s: float) -> DesiredReceived | None:
        """Once per wait, the held desired state as it came when its manifest is `wait_s` late: for the
        machine to refuse (`not_assigned`) and the cloud to hear of it. It stays held."""
        held = self._held
        if held is None or held.told or held.since_s is None or now_s - held.since_s < self.wait_s:
            return None
        held.told = True
        return DesiredReceived(held.desired, received_sha256=held.received_sha256)

