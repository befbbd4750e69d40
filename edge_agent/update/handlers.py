"""The update machine's handlers: one function per row kind of the transition table (pure: no I/O).

Each takes the machine's context, the event and the time, changes the context and returns the actions
for the agent to carry out, in order. Every change the agent must survive a restart with is returned as
a SaveJournal action ahead of the step that depends on it. `edge_agent.update.table` says which
(state, event) pairs reach which handler, and which states each may leave the machine in.
"""

from __future__ import annotations

from dataclasses import replace

from edge_agent.clock import Instant
from edge_agent.errors import AgentError
from edge_agent.update.actions import (
    Action,
    Activate,
    BeginDownload,
    CommitDownload,
    Emit,
    FollowFanout,
    LeaveFanout,
    LoadModel,
    PruneModels,
    Report,
    RollBack,
    RunSelfTest,
    VerifyArtifact,
    WriteChunk,
)
from edge_agent.update.artifact_choice import choose_artifact
from edge_agent.update.context import UpdateContext
from edge_agent.update.events import (
    Aborted,
    ArtifactRejected,
    ArtifactVerified,
    ChunkReceived,
    DesiredReceived,
    Event,
    FanoutSubscribed,
    LoadFailed,
    ModelLoaded,
    SelfTestFailed,
    SelfTestPassed,
    TrustReceived,
)
from edge_agent.update.journal import InstalledModel, Outcome, PendingUpdate
from edge_agent.update.manifest_fetch import received_digest
from edge_agent.update.states import State
from protocols import trust
from protocols.assignment import verify_desired
from protocols.chunking import ChunkLayout, ChunkLayoutError
from protocols.codes import ErrorCode
from protocols.v1 import messages_pb2 as pb

# ---------------------------------------------------------------------------------------- any state


def on_started(up: UpdateContext, _event: Event, _now: Instant) -> list[Action]:
    pending = up.journal.pending
    if pending is None:
        return [Report()]
    if up.state is State.DOWNLOADING:
        assert up.tracker is not None
        if not up.tracker.complete:
            topic_filter = up.fanout()  # subscribed now, awaited once connected
            follow: list[Action] = [] if topic_filter is None else [FollowFanout(topic_filter)]
            return [*follow, Report()]  # the chunks are asked for once connected
        up.state = State.VERIFYING
    downloaded = pending.layout is not None
    return [VerifyArtifact(up.attempt, pending.target.artifact(), downloaded), Report()]


def on_desired(up: UpdateContext, event: Event, now: Instant, *, previous_loaded: bool = False) -> list[Action]:
    """Act on a desired state only once everything in it verifies; a refusal changes no state at all.
    `previous_loaded`: the previous model is still loaded (a probation), so going back to it is a swap."""
    assert isinstance(event, DesiredReceived)
    desired, accepted = event.desired, up.accepted_counter
    digest = event.received_sha256 or received_digest(desired)
    if up.verified_before(digest):
        # the retained desired state the broker re-delivers on every connect, byte for byte the one that
        # verified with this counter: not checked again (checking loads cryptography, ~8 MB resident)
        return [] if up.journal.pending is not None else [Report()]
    try:
        verified = verify_desired(
            desired, up.root, device_id=up.config.device_id, last_counter=accepted - 1, now_ms=now.wall_ms
        )
    except trust.VerificationError as exc:
        return up.refuse(exc.code, str(exc), now)
    counter, deployment_id = verified.assignment.counter, verified.assignment.deployment_id
    # saved with the next step (the one this desired state starts, when it is new)
    up.journal = up.journal.with_(verified_desired=f"{counter}:{digest}")
    if counter == accepted:  # the director signs one assignment per counter: this is a re-delivery
        return [] if up.journal.pending is not None else [Report()]
    up.accept(verified.root)
    if verified.manifest is None:
        return _clear(up, counter)
    active, previous = up.journal.active, up.journal.previous
    if active is not None and desired.manifest.manifest == _inner_manifest(active):
        return _already_active(up, counter, deployment_id)
    if previous_loaded and previous is not None and desired.manifest.manifest == _inner_manifest(previous):
        return _back_to_loaded_previous(up, counter, deployment_id)
    actions: list[Action] = [Emit(pb.EVENT_KIND_UPDATE_STARTED, deployment_id)]
    try:
        runtimes, on_disk = up.usable_runtimes(), up.journal.models_on_disk()
        artifact, layout = choose_artifact(verified.manifest, desired, runtimes, on_disk)
    except (trust.VerificationError, AgentError) as exc:
        return actions + up.fail(counter, deployment_id, exc.code, str(exc))
    return actions + begin(up, desired, counter, deployment_id, artifact, layout, now)


def on_trust(up: UpdateContext, event: Event, _now: Instant) -> list[Action]:
    """Follow newer root versions from the fleet's retained trust chain; never changes the update state."""
    assert isinstance(event, TrustReceived)
    try:
        newer = up.root.advance(event.chain.roots)
    except trust.VerificationError as exc:
        return up.refuse(exc.code, f"trust chain refused: {exc}", _now)
    if newer.version == up.root.version:
        return []
    up.accept(newer)
    return [up.save()]


def begin(
    up: UpdateContext,
    desired: pb.DesiredState,
    counter: int,
    deployment_id: str,
    artifact: pb.Artifact,
    layout: ChunkLayout | None,
    now: Instant,
) -> list[Action]:
    """Start on a verified desired state: reuse the download in progress if it is the same artifact."""
    pending, old_tracker = up.journal.pending, up.tracker
    reuse = pending is not None and layout is not None and pending.layout == layout and old_tracker is not None
    old_filter = up.fanout() if reuse else None
    actions: list[Action] = []
    if reuse:
        up.tracker, up.attempt = None, up.attempt + 1
    else:
        actions += up.discard_pending()
    target = InstalledModel(desired.manifest.SerializeToString(), artifact.sha256)
    new_pending = PendingUpdate(counter, deployment_id, target, layout, desired=desired.SerializeToString())
    if layout is None:  # the artifact is already on disk (a re-signed active or previous model)
        up.state = State.VERIFYING
        return actions + [up.save(pending=new_pending), VerifyArtifact(up.attempt, artifact, False), Report()]
    if not reuse:
        actions.append(BeginDownload(layout.sha256, layout.size_bytes))
    up.tracker = old_tracker if reuse else up.new_tracker(layout, set())
    assert up.tracker is not None
    up.state = State.DOWNLOADING
    actions.append(up.save(pending=new_pending))
    if up.tracker.complete:
        up.state = State.VERIFYING
        return actions + [*up.leave_fanout(), VerifyArtifact(up.attempt, artifact, True), Report()]
    topic_filter = up.fanout()
    if old_filter is not None and old_filter != topic_filter:
        actions.append(LeaveFanout(old_filter))
    if topic_filter is not None:
        # one copy for the whole fleet: wait for the retained chunks, ask only for what does not come; the
        # wait proper starts at the SUBACK (on_fanout_subscribed), as the chunks cannot come before it
        up.tracker.expect_fanout(now.mono_s, subscribed=False)
        actions.append(FollowFanout(topic_filter))
    return actions + up.request(now) + [Report()]


def _already_active(up: UpdateContext, counter: int, deployment_id: str) -> list[Action]:
    """The assigned manifest is the one we serve (a new assignment for other reasons): no download."""
    actions = up.discard_pending()
    up.state = State.ACTIVE
    actions.append(
        up.save(
            pending=None,
            desired_generation=counter,
            deployment_id=deployment_id,
            outcome=Outcome.ACTIVE,
            last_error=None,
        )
    )
    return actions + [Report()]


def _back_to_loaded_previous(up: UpdateContext, counter: int, deployment_id: str) -> list[Action]:
    """The cloud assigns the previous model while it is still loaded (the new one is on probation): swap it
    back in at once, as a local rollback does. It verified, loaded and passed its self-test when it was
    installed and served until the activation; going through download, verify, load and self-test again
    took most of a second per device of a staged rollout's recovery. The journal then reads as after any
    activation of it: the model it replaces is the previous one, and no probation starts (as
    `UpdateContext.new_probation` decides for a rollback the cloud ordered)."""
    journal = up.journal
    assert journal.previous is not None
    actions = up.discard_pending()
    up.state = State.ACTIVE
    return actions + [
        Emit(pb.EVENT_KIND_UPDATE_STARTED, deployment_id),
        up.save(
            active=journal.previous,
            previous=journal.active,
            desired_generation=counter,
            deployment_id=deployment_id,
            outcome=Outcome.ACTIVE,
            last_error=None,
            pending=None,
            probation=None,
        ),
        RollBack(journal.previous),
        Emit(pb.EVENT_KIND_ACTIVATED, deployment_id, journal.previous),
        Report(),
    ]


def _clear(up: UpdateContext, counter: int) -> list[Action]:
    """A signed assignment of no model: stop any update, keep serving what is active, report IDLE."""
    actions = up.discard_pending()
    up.state = State.IDLE
    actions += [
        up.save(pending=None, desired_generation=counter, outcome=Outcome.IDLE, deployment_id="", last_error=None),
        PruneModels(up.journal.models_on_disk()),
        Report(),
    ]
    return actions


# ---------------------------------------------------------------------------------------- downloading


def on_connected(up: UpdateContext, _event: Event, now: Instant) -> list[Action]:
    assert up.tracker is not None
    if up.fanout() is not None:  # the (re)subscription brings the retained chunks again
        up.tracker.expect_fanout(now.mono_s)
    return up.request(now, also=up.tracker.renew(now.mono_s))


def on_fanout_subscribed(up: UpdateContext, event: Event, now: Instant) -> list[Action]:
    assert isinstance(event, FanoutSubscribed) and up.tracker is not None
    if event.topic_filter != up.fanout():
        return []  # an earlier download's topics
    if event.granted:  # the retained chunks come now: the wait for them starts here
        up.tracker.expect_fanout(now.mono_s)
        return []
    up.tracker.fanout_refused()  # refused (an ACL): ask for every chunk on the device's own topics
    return up.request(now)


def on_chunk(up: UpdateContext, event: Event, now: Instant) -> list[Action]:
    assert isinstance(event, ChunkReceived)
    pending, tracker = up.journal.pending, up.tracker
    assert pending is not None and pending.layout is not None and tracker is not None
    chunk, layout = event.chunk, pending.layout
    if chunk.sha256 != layout.sha256 or not layout.has(chunk.index):
        return []  # not for the artifact we are fetching
    index = chunk.index
    problem = ""
    if chunk.error:
        problem = f"the cloud could not serve chunk {index}: {chunk.error}"
    else:
        try:
            layout.check(chunk)
        except ChunkLayoutError as exc:
            problem = f"chunk {index} does not fit the layout ({exc})"
    if problem:
        if index in tracker.received:
            return []
        if not tracker.mark_lost(index):
            return up.fail_pending(ErrorCode.DOWNLOAD_FAILED, f"{problem}; out of retries")
        return up.request(now)
    if not tracker.mark_received(index):
        return []  # a duplicate
    tracker.fanout_progress(now.mono_s)
    actions: list[Action] = [WriteChunk(up.attempt, layout.sha256, index, chunk.offset, bytes(chunk.data))]
    if not tracker.complete:
        return actions + up.request(now)
    up.state = State.VERIFYING
    return actions + [
        *up.leave_fanout(),
        Emit(pb.EVENT_KIND_DOWNLOADED, pending.deployment_id, pending.target),
        VerifyArtifact(up.attempt, pending.target.artifact(), True),
        Report(),
    ]


def on_tick(up: UpdateContext, _event: Event, now: Instant) -> list[Action]:
    assert up.tracker is not None
    late, within_retries = up.tracker.expire(now.mono_s)
    if not late:
        return []
    if not within_retries:
        return up.fail_pending(
            ErrorCode.DOWNLOAD_FAILED,
            f"chunks {late} did not arrive after {up.config.chunks.max_retries} retries",
        )
    return up.request(now)


# ---------------------------------------------------------------------------------------- installing


def _fetch_again_per_device(up: UpdateContext, now: Instant) -> list[Action]:
    """The fleet-wide chunks made a wrong artifact (which chunk is bad cannot be told: chunks carry no hash
    of their own): start over, every chunk asked for on the device's own topics. Once only: a second
    mismatch fails the update as without fan-out."""
    pending = up.journal.pending
    assert pending is not None and pending.layout is not None
    actions = up.discard_pending()  # leaves the fan-out topics
    retry = replace(pending, fanout_failed=True)
    up.tracker = up.new_tracker(pending.layout, set())
    up.state = State.DOWNLOADING
    actions += [BeginDownload(pending.layout.sha256, pending.layout.size_bytes), up.save(pending=retry)]
    return actions + up.request(now) + [Report()]


def on_verified(up: UpdateContext, event: Event, _now: Instant) -> list[Action]:
    assert isinstance(event, ArtifactVerified)
    if up.stale(event):
        return []
    pending = up.journal.pending
    assert pending is not None
    actions: list[Action] = []
    if pending.layout is not None:
        # from here on the artifact is a model on disk: a restart re-verifies it, never re-downloads
        actions.append(CommitDownload(up.attempt, pending.layout.sha256))
        up.tracker = None
    # journalled before the load: a start that finds it still set knows the load killed the process
    actions.append(up.save(pending=replace(pending, layout=None, load_attempts=pending.load_attempts + 1)))
    manifest = pending.target.manifest()
    up.state = State.LOADING
    return actions + [
        Emit(pb.EVENT_KIND_VERIFIED, pending.deployment_id, pending.target),
        LoadModel(up.attempt, pending.target.artifact(), event.data, manifest.io, manifest.self_test),
        Report(),
    ]


def on_failure_result(up: UpdateContext, event: Event, now: Instant) -> list[Action]:
    assert isinstance(event, ArtifactRejected | LoadFailed | Aborted | SelfTestFailed)
    if up.stale(event):
        return []
    if isinstance(event, ArtifactRejected) and event.code == ErrorCode.DIGEST_MISMATCH and up.fanout() is not None:
        return _fetch_again_per_device(up, now)
    if isinstance(event, SelfTestFailed):
        return up.fail_pending(ErrorCode.SELF_TEST_FAILED, event.detail)
    return up.fail_pending(event.code, event.message)


def on_loaded(up: UpdateContext, event: Event, _now: Instant) -> list[Action]:
    assert isinstance(event, ModelLoaded)
    if up.stale(event):
        return []
    pending = up.journal.pending
    assert pending is not None
    manifest = pending.target.manifest()
    up.state = State.SELF_TEST
    return [RunSelfTest(up.attempt, event.model, manifest.self_test, manifest.io), Report()]


def on_self_test_passed(up: UpdateContext, event: Event, now: Instant) -> list[Action]:
    """Activate; with a previous model to fall back to, the new one starts its probation (`update.probation`)."""
    assert isinstance(event, SelfTestPassed)
    if up.stale(event):
        return []
    pending = up.journal.pending
    assert pending is not None
    probation = up.new_probation(now)
    up.state = State.ACTIVE if probation is None else State.PROBATION
    return [
        Emit(pb.EVENT_KIND_SELF_TEST_PASSED, pending.deployment_id, pending.target),
        up.save(
            active=pending.target,
            previous=up.journal.active,
            desired_generation=pending.generation,
            deployment_id=pending.deployment_id,
            outcome=Outcome.ACTIVE,
            last_error=None,
            pending=None,
            probation=probation,
        ),
        Activate(event.model, pending.target, keep_previous=probation is not None),
        Emit(pb.EVENT_KIND_ACTIVATED, pending.deployment_id, pending.target),
        PruneModels(up.journal.models_on_disk()),
        Report(),
    ]


def _inner_manifest(model: InstalledModel) -> bytes:
    return pb.SignedManifest.FromString(model.signed_manifest).manifest
