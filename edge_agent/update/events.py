"""What the update machine reacts to: messages from the cloud, timers, and the results of its own actions.

Results of background work (verify, load, self-test) carry the `attempt` that asked for them, so that a
result arriving after the update was superseded is recognised and dropped. Each event's `kind` is the
column it has in the transition table (`edge_agent.update.table`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from protocols.v1 import messages_pb2 as pb


class EventKind(Enum):
    STARTED = "started"
    CONNECTED = "connected"
    DESIRED = "desired"
    TRUST = "trust"
    CHUNK = "chunk"
    FANOUT_SUBSCRIBED = "fanout_subscribed"
    TICK = "tick"
    ARTIFACT_VERIFIED = "artifact_verified"
    ARTIFACT_REJECTED = "artifact_rejected"
    MODEL_LOADED = "model_loaded"
    LOAD_FAILED = "load_failed"
    LOAD_CRASHED = "load_crashed"
    SELF_TEST_PASSED = "self_test_passed"
    SELF_TEST_FAILED = "self_test_failed"
    ABORTED = "aborted"
    HEALTH = "health"


@dataclass(frozen=True)
class Started:
    kind: ClassVar[EventKind] = EventKind.STARTED


@dataclass(frozen=True)
class Connected:
    kind: ClassVar[EventKind] = EventKind.CONNECTED


@dataclass(frozen=True)
class DesiredReceived:
    desired: pb.DesiredState
    # the digest of the desired state as the broker delivered it, when its manifest was read by digest and
    # put in since (`edge_agent.update.manifest_fetch`): a re-delivery is then recognised without the manifest
    received_sha256: str = ""
    kind: ClassVar[EventKind] = EventKind.DESIRED


@dataclass(frozen=True)
class TrustReceived:
    """The fleet's retained TrustChain: newer root versions to follow (verified by the handler)."""

    chain: pb.TrustChain
    kind: ClassVar[EventKind] = EventKind.TRUST


@dataclass(frozen=True)
class ChunkReceived:
    chunk: pb.ArtifactChunk
    kind: ClassVar[EventKind] = EventKind.CHUNK


@dataclass(frozen=True)
class FanoutSubscribed:
    """The broker answered a subscription made on a live connection (its SUBACK): granted or refused."""

    topic_filter: str
    granted: bool
    kind: ClassVar[EventKind] = EventKind.FANOUT_SUBSCRIBED


@dataclass(frozen=True)
class Tick:
    kind: ClassVar[EventKind] = EventKind.TICK


@dataclass(frozen=True)
class ArtifactVerified:
    attempt: int
    data: bytes
    kind: ClassVar[EventKind] = EventKind.ARTIFACT_VERIFIED


@dataclass(frozen=True)
class ArtifactRejected:
    attempt: int
    code: str
    message: str
    kind: ClassVar[EventKind] = EventKind.ARTIFACT_REJECTED


@dataclass(frozen=True)
class ModelLoaded:
    attempt: int
    model: Any
    kind: ClassVar[EventKind] = EventKind.MODEL_LOADED


@dataclass(frozen=True)
class LoadFailed:
    attempt: int
    code: str
    message: str
    kind: ClassVar[EventKind] = EventKind.LOAD_FAILED


@dataclass(frozen=True)
class LoadCrashed:
    """Loading (or self-testing) the model killed the child process that tried it first."""

    attempt: int
    message: str
    kind: ClassVar[EventKind] = EventKind.LOAD_CRASHED


@dataclass(frozen=True)
class SelfTestPassed:
    attempt: int
    model: Any
    detail: str = ""
    kind: ClassVar[EventKind] = EventKind.SELF_TEST_PASSED


@dataclass(frozen=True)
class SelfTestFailed:
    attempt: int
    detail: str
    kind: ClassVar[EventKind] = EventKind.SELF_TEST_FAILED


@dataclass(frozen=True)
class Aborted:
    """An action of this attempt failed in I/O (e.g. the disk is full): the update cannot go on."""

    attempt: int
    code: str
    message: str
    kind: ClassVar[EventKind] = EventKind.ABORTED


@dataclass(frozen=True)
class HealthCheck:
    """The serving model's figures since it was activated (or since the agent started), sent every tick on
    probation (no other state uses it), whether connected or not: what a model on probation is judged on."""

    inferences: int
    errors: int
    shadow_compared: int = 0  # inputs also run through the previous model (kept on probation) ...
    shadow_agreed: int = 0  # ... and answered alike
    kind: ClassVar[EventKind] = EventKind.HEALTH


Event = (
    Started
    | Connected
    | DesiredReceived
    | TrustReceived
    | ChunkReceived
    | FanoutSubscribed
    | Tick
    | ArtifactVerified
    | ArtifactRejected
    | ModelLoaded
    | LoadFailed
    | LoadCrashed
    | SelfTestPassed
    | SelfTestFailed
    | Aborted
    | HealthCheck
)
