"""The vocabulary of the update state machine (`edge_agent.updater`): its states, the events it takes and
the actions it returns. Plain data; the agent turns actions into I/O and I/O results back into events.

Results of background work (verify, load, self-test) carry the `attempt` that asked for them, so that a
result arriving after the update was superseded is recognised and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from edge_agent.journal import InstalledModel, Journal, LastError
from protocols.v1 import messages_pb2 as pb


class State(Enum):
    IDLE = "idle"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    LOADING = "loading"
    SELF_TEST = "self_test"
    ACTIVE = "active"
    FAILED = "failed"

    @property
    def wire(self) -> pb.UpdateState:
        return _WIRE_STATES[self]


_WIRE_STATES = {
    State.IDLE: pb.UPDATE_STATE_IDLE,
    State.DOWNLOADING: pb.UPDATE_STATE_DOWNLOADING,
    State.VERIFYING: pb.UPDATE_STATE_VERIFYING,
    State.LOADING: pb.UPDATE_STATE_LOADING,
    State.SELF_TEST: pb.UPDATE_STATE_SELF_TEST,
    State.ACTIVE: pb.UPDATE_STATE_ACTIVE,
    State.FAILED: pb.UPDATE_STATE_FAILED,
}

IN_PROGRESS = frozenset({State.DOWNLOADING, State.VERIFYING, State.LOADING, State.SELF_TEST})
SETTLED = frozenset({State.IDLE, State.ACTIVE, State.FAILED})


class EventKind(Enum):
    STARTED = "started"
    CONNECTED = "connected"
    DESIRED = "desired"
    DESIRED_CLEARED = "desired_cleared"
    CHUNK = "chunk"
    TICK = "tick"
    ARTIFACT_VERIFIED = "artifact_verified"
    ARTIFACT_REJECTED = "artifact_rejected"
    MODEL_LOADED = "model_loaded"
    LOAD_FAILED = "load_failed"
    SELF_TEST_PASSED = "self_test_passed"
    SELF_TEST_FAILED = "self_test_failed"
    ABORTED = "aborted"


# ---------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Started:
    kind: ClassVar[EventKind] = EventKind.STARTED


@dataclass(frozen=True)
class Connected:
    kind: ClassVar[EventKind] = EventKind.CONNECTED


@dataclass(frozen=True)
class DesiredReceived:
    desired: pb.DesiredState
    kind: ClassVar[EventKind] = EventKind.DESIRED


@dataclass(frozen=True)
class DesiredCleared:
    kind: ClassVar[EventKind] = EventKind.DESIRED_CLEARED


@dataclass(frozen=True)
class ChunkReceived:
    chunk: pb.ArtifactChunk
    kind: ClassVar[EventKind] = EventKind.CHUNK


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


Event = (
    Started
    | Connected
    | DesiredReceived
    | DesiredCleared
    | ChunkReceived
    | Tick
    | ArtifactVerified
    | ArtifactRejected
    | ModelLoaded
    | LoadFailed
    | SelfTestPassed
    | SelfTestFailed
    | Aborted
)

# ---------------------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class RequestChunks:
    sha256: str
    indexes: tuple[int, ...]
    request_id: str


@dataclass(frozen=True)
class BeginDownload:
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class WriteChunk:
    attempt: int
    sha256: str
    index: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class DiscardDownload:
    sha256: str


@dataclass(frozen=True)
class CommitDownload:
    attempt: int
    sha256: str


@dataclass(frozen=True)
class VerifyArtifact:
    """Background: read the artifact, check size and digest -> ArtifactVerified / ArtifactRejected."""

    attempt: int
    artifact: pb.Artifact
    downloaded: bool  # True: the bytes just downloaded; False: a model already in the store


@dataclass(frozen=True)
class LoadModel:
    """Background: load the verified bytes in a runtime -> ModelLoaded / LoadFailed."""

    attempt: int
    artifact: pb.Artifact
    data: bytes
    io: pb.IoSchema


@dataclass(frozen=True)
class RunSelfTest:
    """Background: run the manifest's self-test vectors -> SelfTestPassed / SelfTestFailed."""

    attempt: int
    model: Any
    self_test: pb.SelfTest
    io: pb.IoSchema


@dataclass(frozen=True)
class Activate:
    """Swap the serving model (the journal naming it is saved just before)."""

    model: Any
    installed: InstalledModel


@dataclass(frozen=True)
class SaveJournal:
    journal: Journal


@dataclass(frozen=True)
class PruneModels:
    keep: frozenset[str]


@dataclass(frozen=True)
class Emit:
    """Publish a LifecycleEvent."""

    kind: pb.EventKind
    deployment_id: str = ""
    model: InstalledModel | None = None
    error: LastError | None = None


@dataclass(frozen=True)
class Report:
    """Publish the ReportedState (the agent builds it from `Updater.view()`)."""


Action = (
    RequestChunks
    | BeginDownload
    | WriteChunk
    | DiscardDownload
    | CommitDownload
    | VerifyArtifact
    | LoadModel
    | RunSelfTest
    | Activate
    | SaveJournal
    | PruneModels
    | Emit
    | Report
)
BACKGROUND_ACTIONS = (VerifyArtifact, LoadModel, RunSelfTest)
