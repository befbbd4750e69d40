"""What the update machine asks for: plain data the agent's executor (`edge_agent.executor`) turns into I/O.

The machine returns them in order; an action tied to an `attempt` is dropped with the rest of its batch
when its I/O fails (the executor then reports `Aborted`). Background actions run off the agent's
message thread (`edge_agent.update.jobs`) and answer with an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_agent.update.journal import InstalledModel, Journal, LastError
from protocols.v1 import messages_pb2 as pb


@dataclass(frozen=True)
class RequestChunks:
    sha256: str
    indexes: tuple[int, ...]
    request_id: str


@dataclass(frozen=True)
class FollowFanout:
    """Subscribe to the fleet-wide retained chunks of the artifact being downloaded."""

    topic_filter: str


@dataclass(frozen=True)
class LeaveFanout:
    """Unsubscribe from them: the download ended (done, failed or replaced)."""

    topic_filter: str


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
    self_test: pb.SelfTest | None = None  # for the check in a child process (`edge_agent.serving.isolated`)


@dataclass(frozen=True)
class RunSelfTest:
    """Background: run the manifest's self-test vectors -> SelfTestPassed / SelfTestFailed."""

    attempt: int
    model: Any
    self_test: pb.SelfTest
    io: pb.IoSchema


@dataclass(frozen=True)
class Activate:
    """Swap the serving model (the journal naming it is saved just before); with `keep_previous` the model it
    replaces stays loaded for the probation (shadowed, ready to roll back to), else it is let go."""

    model: Any
    installed: InstalledModel
    keep_previous: bool = False


@dataclass(frozen=True)
class RollBack:
    """Swap the previous model back in (the one kept loaded, else loaded again) and stop shadowing."""

    installed: InstalledModel


@dataclass(frozen=True)
class EndProbation:
    """The probation is over (passed, or superseded): stop shadowing and unload the previous model."""


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
    | FollowFanout
    | LeaveFanout
    | BeginDownload
    | WriteChunk
    | DiscardDownload
    | CommitDownload
    | VerifyArtifact
    | LoadModel
    | RunSelfTest
    | Activate
    | RollBack
    | EndProbation
    | SaveJournal
    | PruneModels
    | Emit
    | Report
)
BACKGROUND_ACTIONS = (VerifyArtifact, LoadModel, RunSelfTest)
