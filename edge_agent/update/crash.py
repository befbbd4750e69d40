"""A runtime that crashes cannot brick the device: rows of the transition table for a load that killed a
process (pure: no I/O).

    LOADING --load_crashed (the child process that loads first died)--> fallback or FAILED
    LOADING --started (the journal says a load began and never ended)--> VERIFYING (load again), or,
        after MAX_LOAD_ATTEMPTS such starts, fallback or FAILED
    fallback: the runtime is journalled as crashed (not chosen nor advertised again until the agent or the
        runtime changes version, `update.crash_marks`), the cloud hears
        `runtime_crashed`, and another artifact of the same manifest in a runtime that still works is
        installed (DOWNLOADING / VERIFYING); with none, FAILED. The serving model is never touched.

`handlers.on_verified` journals `PendingUpdate.load_attempts` before every load; the journal then starts
the machine in LOADING (`UpdateContext`), which is how a start after a SIGSEGV reaches these rows.
"""

from __future__ import annotations

from edge_agent.clock import Instant
from edge_agent.errors import AgentError
from edge_agent.update import crash_marks
from edge_agent.update.actions import Action, Emit, Report, VerifyArtifact
from edge_agent.update.artifact_choice import choose_artifact
from edge_agent.update.context import UpdateContext
from edge_agent.update.events import Event, LoadCrashed
from edge_agent.update.handlers import begin
from edge_agent.update.journal import LastError
from edge_agent.update.states import State
from protocols import trust
from protocols.chunking import ChunkLayout
from protocols.codes import ErrorCode
from protocols.v1 import messages_pb2 as pb

# one start mid-load may be a power cut; a second one is the runtime
MAX_LOAD_ATTEMPTS = 2


def on_load_interrupted(up: UpdateContext, _event: Event, now: Instant) -> list[Action]:
    pending = up.journal.pending
    assert pending is not None
    if pending.load_attempts < MAX_LOAD_ATTEMPTS:
        up.state = State.VERIFYING
        return [VerifyArtifact(up.attempt, pending.target.artifact(), False), Report()]
    runtime = pending.target.artifact().runtime
    return _crashed(up, f"the agent died {pending.load_attempts} times while loading the {runtime} artifact", now)


def on_load_crashed(up: UpdateContext, event: Event, now: Instant) -> list[Action]:
    assert isinstance(event, LoadCrashed)
    if up.stale(event):
        return []
    return _crashed(up, event.message, now)


def _crashed(up: UpdateContext, why: str, now: Instant) -> list[Action]:
    pending = up.journal.pending
    assert pending is not None
    runtime = pending.target.artifact().runtime
    up.journal = crash_marks.mark(up.journal, runtime, up.config.crash_stamps)
    fallback = _fallback(up, pending.target.manifest(), pending.desired)
    if fallback is None:
        message = f"{why}; runtime {runtime} is disabled and no other artifact fits this device"
        return up.fail(pending.generation, pending.deployment_id, ErrorCode.RUNTIME_CRASHED, message, pending.target)
    artifact, layout, desired = fallback
    error = LastError(ErrorCode.RUNTIME_CRASHED, f"{why}; runtime {runtime} is disabled, trying {artifact.runtime}")
    emit = Emit(pb.EVENT_KIND_ERROR, pending.deployment_id, pending.target, error)
    return [emit, *begin(up, desired, pending.generation, pending.deployment_id, artifact, layout, now)]


def _fallback(
    up: UpdateContext, manifest: pb.Manifest, desired_bytes: bytes
) -> tuple[pb.Artifact, ChunkLayout | None, pb.DesiredState] | None:
    """Another artifact of the manifest in a runtime not (yet) crashed, with where to get it; None if none."""
    if not desired_bytes:
        return None
    desired = pb.DesiredState.FromString(desired_bytes)
    try:
        artifact, layout = choose_artifact(manifest, desired, up.usable_runtimes(), up.journal.models_on_disk())
    except (trust.VerificationError, AgentError):
        return None
    return artifact, layout, desired
