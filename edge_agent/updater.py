"""The update path as an explicit state machine (pure: no I/O, no clock, no threads).

    IDLE/ACTIVE/FAILED --desired--> DOWNLOADING --all chunks--> VERIFYING --digest ok--> LOADING
        --loaded--> SELF_TEST --passed--> ACTIVE
    any failure ----------------------------------------------------------------------> FAILED
    (the previous model keeps serving throughout; only ACTIVE swaps it)

`Updater.handle(event, now)` looks the (state, event kind) pair up in TRANSITIONS, runs its handler and
returns the actions for the agent to carry out, in order. Pairs missing from the table are ignored (a
chunk after the download finished, a stale background result). Every change the agent must survive a
restart with is returned as a SaveJournal action ahead of the step that depends on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.artifact_choice import choose_artifact
from edge_agent.chunks import ChunkPolicy, ChunkTracker
from edge_agent.clock import Instant
from edge_agent.errors import AgentError
from edge_agent.journal import InstalledModel, Journal, LastError, Outcome, PendingUpdate
from edge_agent.updater_types import (
    IN_PROGRESS,
    SETTLED,
    Aborted,
    Action,
    Activate,
    ArtifactRejected,
    ArtifactVerified,
    BeginDownload,
    ChunkReceived,
    CommitDownload,
    DesiredReceived,
    DiscardDownload,
    Emit,
    Event,
    EventKind,
    LoadFailed,
    LoadModel,
    ModelLoaded,
    PruneModels,
    Report,
    RequestChunks,
    RunSelfTest,
    SaveJournal,
    SelfTestFailed,
    SelfTestPassed,
    State,
    VerifyArtifact,
    WriteChunk,
)
from protocols import trust
from protocols.chunking import ChunkLayout, ChunkLayoutError
from protocols.codes import VERIFICATION_CODES, ErrorCode
from protocols.v1 import messages_pb2 as pb


@dataclass(frozen=True)
class UpdaterConfig:
    root: trust.TrustedRoot
    runtimes: tuple[str, ...]  # runtimes this device can use, most preferred first
    chunks: ChunkPolicy = ChunkPolicy()


@dataclass(frozen=True)
class UpdaterView:
    """What the ReportedState needs from the updater."""

    state: State
    active: InstalledModel | None
    previous: InstalledModel | None
    deployment_id: str
    desired_generation: int
    last_error: LastError | None


def event_kind_for(code: str) -> pb.EventKind:
    if code in VERIFICATION_CODES:
        return pb.EVENT_KIND_VERIFICATION_FAILED
    if code == ErrorCode.SELF_TEST_FAILED:
        return pb.EVENT_KIND_SELF_TEST_FAILED
    return pb.EVENT_KIND_ERROR


Handler = Callable[["Updater", Event, Instant], list[Action]]


@dataclass(frozen=True)
class Transition:
    handler: Handler
    targets: frozenset[State]  # the states the handler may leave the machine in


class Updater:
    def __init__(self, config: UpdaterConfig, journal: Journal, received_chunks: set[int] | None = None) -> None:
        self.config = config
        self.journal = journal
        self.attempt = 0
        self._requests = 0
        self._tracker: ChunkTracker | None = None
        pending = journal.pending
        if pending is None:
            self.state = {Outcome.IDLE: State.IDLE, Outcome.ACTIVE: State.ACTIVE, Outcome.FAILED: State.FAILED}[
                journal.outcome
            ]
        elif pending.layout is None:
            self.state = State.VERIFYING
        else:
            self.state = State.DOWNLOADING
            self._tracker = self._new_tracker(pending.layout, received_chunks or set())

    # ------------------------------------------------------------------------------------------ public

    def handle(self, event: Event, now: Instant) -> list[Action]:
        transition = TRANSITIONS.get((self.state, event.kind))
        if transition is None:
            return []
        return transition.handler(self, event, now)

    def view(self) -> UpdaterView:
        pending = self.journal.pending
        return UpdaterView(
            state=self.state,
            active=self.journal.active,
            previous=self.journal.previous,
            deployment_id=pending.deployment_id if pending else self.journal.deployment_id,
            desired_generation=pending.generation if pending else self.journal.desired_generation,
            last_error=None if pending else self.journal.last_error,
        )

    # ------------------------------------------------------------------------------------------ helpers

    def _new_tracker(self, layout: ChunkLayout, received: set[int]) -> ChunkTracker:
        valid = {i for i in received if 0 <= i < layout.total_chunks}
        return ChunkTracker(layout.total_chunks, self.config.chunks, received=valid)

    def _save(self, **changes: object) -> SaveJournal:
        self.journal = self.journal.with_(**changes)
        return SaveJournal(self.journal)

    def _request(self, now: Instant, also: list[int] | None = None) -> list[Action]:
        assert self._tracker is not None and self.journal.pending is not None
        layout = self.journal.pending.layout
        assert layout is not None
        indexes = sorted(set(also or []) | set(self._tracker.next_batch(now.mono_s)))
        if not indexes:
            return []
        self._requests += 1
        request_id = f"{self.journal.boot_count}.{self.journal.pending.generation}.{self._requests}"
        return [RequestChunks(layout.sha256, tuple(indexes), request_id)]

    def _discard_pending(self) -> list[Action]:
        pending = self.journal.pending
        self._tracker = None
        self.attempt += 1  # whatever the old attempt still has running in the background is now stale
        if pending is not None and pending.layout is not None:
            return [DiscardDownload(pending.layout.sha256)]
        return []

    def _fail(self, generation: int, deployment_id: str, code: str, message: str) -> list[Action]:
        error = LastError(code, message)
        actions: list[Action] = [Emit(event_kind_for(code), deployment_id, None, error)]
        actions += self._discard_pending()
        self.state = State.FAILED
        actions.append(
            self._save(
                pending=None,
                desired_generation=generation,
                deployment_id=deployment_id,
                outcome=Outcome.FAILED,
                last_error=error,
            )
        )
        # a committed artifact of a failed update is not needed; active and previous stay
        actions += [PruneModels(self.journal.models_on_disk()), Report()]
        return actions

    def _fail_pending(self, code: str, message: str) -> list[Action]:
        pending = self.journal.pending
        assert pending is not None
        actions = self._fail(pending.generation, pending.deployment_id, code, message)
        first = actions[0]
        assert isinstance(first, Emit)
        actions[0] = Emit(first.kind, first.deployment_id, pending.target, first.error)
        return actions

    # ------------------------------------------------------------------------------------------ handlers

    def _on_started(self, _event: Event, _now: Instant) -> list[Action]:
        pending = self.journal.pending
        if pending is None:
            return [Report()]
        if self.state is State.DOWNLOADING:
            assert self._tracker is not None
            if not self._tracker.complete:
                return [Report()]  # the chunks are asked for once connected
            self.state = State.VERIFYING
        downloaded = pending.layout is not None
        return [VerifyArtifact(self.attempt, pending.target.artifact(), downloaded), Report()]

    def _on_connected(self, _event: Event, now: Instant) -> list[Action]:
        assert self._tracker is not None
        return self._request(now, also=self._tracker.renew(now.mono_s))

    def _on_desired(self, event: Event, now: Instant) -> list[Action]:
        assert isinstance(event, DesiredReceived)
        desired = event.desired
        generation, deployment_id = desired.generation, desired.deployment_id
        pending = self.journal.pending
        current = pending.generation if pending else self.journal.desired_generation
        if pending is not None and generation == pending.generation:
            return []  # already working on it (a re-delivery after reconnect)
        if generation < current or (
            pending is None and generation == current and self.journal.outcome is not Outcome.IDLE
        ):
            return [Report()]  # handled before, or stale: say where we are, fetch nothing

        active = self.journal.active
        if active is not None and desired.manifest.manifest == _inner_manifest(active):
            return self._already_active(desired, now)

        actions: list[Action] = [Emit(pb.EVENT_KIND_UPDATE_STARTED, deployment_id)]
        try:
            model_id = _unverified_model_id(desired.manifest.manifest)
            installed = self.journal.installed_sequences.get(model_id) if model_id is not None else None
            manifest = trust.verify_manifest(
                desired.manifest, self.config.root, now_ms=now.wall_ms, installed_sequence=installed
            )
            artifact, layout = choose_artifact(manifest, desired, self.config.runtimes, self.journal.models_on_disk())
        except (trust.VerificationError, AgentError) as exc:
            return actions + self._fail(generation, deployment_id, exc.code, str(exc))

        old_tracker = self._tracker
        reuse = pending is not None and layout is not None and pending.layout == layout and old_tracker is not None
        if reuse:
            self._tracker, self.attempt = None, self.attempt + 1
        else:
            actions += self._discard_pending()
        target = InstalledModel(desired.manifest.SerializeToString(), artifact.sha256)
        new_pending = PendingUpdate(generation, deployment_id, target, layout)
        if layout is None:  # the artifact is already on disk (a re-signed active or previous model)
            self.state = State.VERIFYING
            actions += [self._save(pending=new_pending), VerifyArtifact(self.attempt, artifact, False), Report()]
            return actions
        if not reuse:
            actions.append(BeginDownload(layout.sha256, layout.size_bytes))
        self._tracker = old_tracker if reuse else self._new_tracker(layout, set())
        assert self._tracker is not None
        self.state = State.DOWNLOADING
        actions.append(self._save(pending=new_pending))
        if self._tracker.complete:
            self.state = State.VERIFYING
            return actions + [VerifyArtifact(self.attempt, artifact, True), Report()]
        return actions + self._request(now) + [Report()]

    def _already_active(self, desired: pb.DesiredState, now: Instant) -> list[Action]:
        """The desired manifest is the one we serve (e.g. a new generation for other reasons): no download."""
        try:
            trust.verify_manifest(desired.manifest, self.config.root, now_ms=now.wall_ms)
        except trust.VerificationError as exc:
            return self._fail(desired.generation, desired.deployment_id, exc.code, str(exc))
        actions = self._discard_pending()
        self.state = State.ACTIVE
        actions.append(
            self._save(
                pending=None,
                desired_generation=desired.generation,
                deployment_id=desired.deployment_id,
                outcome=Outcome.ACTIVE,
                last_error=None,
            )
        )
        return actions + [Report()]

    def _on_cleared(self, _event: Event, _now: Instant) -> list[Action]:
        if self.state is State.IDLE and self.journal.pending is None:
            return []
        actions = self._discard_pending()
        self.state = State.IDLE
        actions += [
            self._save(pending=None, outcome=Outcome.IDLE, deployment_id="", last_error=None),
            PruneModels(self.journal.models_on_disk()),
            Report(),
        ]
        return actions

    def _on_chunk(self, event: Event, now: Instant) -> list[Action]:
        assert isinstance(event, ChunkReceived)
        pending, tracker = self.journal.pending, self._tracker
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
                return self._fail_pending(ErrorCode.DOWNLOAD_FAILED, f"{problem}; out of retries")
            return self._request(now)
        if not tracker.mark_received(index):
            return []  # a duplicate
        actions: list[Action] = [WriteChunk(self.attempt, layout.sha256, index, chunk.offset, bytes(chunk.data))]
        if not tracker.complete:
            return actions + self._request(now)
        self.state = State.VERIFYING
        return actions + [
            Emit(pb.EVENT_KIND_DOWNLOADED, pending.deployment_id, pending.target),
            VerifyArtifact(self.attempt, pending.target.artifact(), True),
            Report(),
        ]

    def _on_tick(self, _event: Event, now: Instant) -> list[Action]:
        assert self._tracker is not None
        late, within_retries = self._tracker.expire(now.mono_s)
        if not late:
            return []
        if not within_retries:
            return self._fail_pending(
                ErrorCode.DOWNLOAD_FAILED,
                f"chunks {late} did not arrive after {self.config.chunks.max_retries} retries",
            )
        return self._request(now)

    def _stale(self, event: Event) -> bool:
        return getattr(event, "attempt", None) != self.attempt

    def _on_verified(self, event: Event, _now: Instant) -> list[Action]:
        assert isinstance(event, ArtifactVerified)
        if self._stale(event):
            return []
        pending = self.journal.pending
        assert pending is not None
        actions: list[Action] = []
        if pending.layout is not None:
            # from here on the artifact is a model on disk: a restart re-verifies it, never re-downloads
            actions += [
                CommitDownload(self.attempt, pending.layout.sha256),
                self._save(pending=PendingUpdate(pending.generation, pending.deployment_id, pending.target, None)),
            ]
            self._tracker = None
        manifest = pending.target.manifest()
        self.state = State.LOADING
        return actions + [
            Emit(pb.EVENT_KIND_VERIFIED, pending.deployment_id, pending.target),
            LoadModel(self.attempt, pending.target.artifact(), event.data, manifest.io),
            Report(),
        ]

    def _on_failure_result(self, event: Event, _now: Instant) -> list[Action]:
        assert isinstance(event, ArtifactRejected | LoadFailed | Aborted | SelfTestFailed)
        if self._stale(event):
            return []
        if isinstance(event, SelfTestFailed):
            return self._fail_pending(ErrorCode.SELF_TEST_FAILED, event.detail)
        return self._fail_pending(event.code, event.message)

    def _on_loaded(self, event: Event, _now: Instant) -> list[Action]:
        assert isinstance(event, ModelLoaded)
        if self._stale(event):
            return []
        pending = self.journal.pending
        assert pending is not None
        manifest = pending.target.manifest()
        self.state = State.SELF_TEST
        return [RunSelfTest(self.attempt, event.model, manifest.self_test, manifest.io), Report()]

    def _on_self_test_passed(self, event: Event, _now: Instant) -> list[Action]:
        assert isinstance(event, SelfTestPassed)
        if self._stale(event):
            return []
        pending = self.journal.pending
        assert pending is not None
        manifest = pending.target.manifest()
        self.state = State.ACTIVE
        return [
            Emit(pb.EVENT_KIND_SELF_TEST_PASSED, pending.deployment_id, pending.target),
            self._save(
                active=pending.target,
                previous=self.journal.active,
                installed_sequences={**self.journal.installed_sequences, manifest.model_id: manifest.sequence},
                desired_generation=pending.generation,
                deployment_id=pending.deployment_id,
                outcome=Outcome.ACTIVE,
                last_error=None,
                pending=None,
            ),
            Activate(event.model, pending.target),
            Emit(pb.EVENT_KIND_ACTIVATED, pending.deployment_id, pending.target),
            PruneModels(self.journal.models_on_disk()),
            Report(),
        ]


def _inner_manifest(model: InstalledModel) -> bytes:
    return pb.SignedManifest.FromString(model.signed_manifest).manifest


def _unverified_model_id(manifest_bytes: bytes) -> str | None:
    """Only to look up the installed sequence to pass to verify_manifest; never trusted beyond that."""
    try:
        return pb.Manifest.FromString(manifest_bytes).model_id
    except Exception:  # noqa: BLE001 - verify_manifest reports malformed bytes properly
        return None


def _table() -> dict[tuple[State, EventKind], Transition]:
    every = frozenset(State)
    table: dict[tuple[State, EventKind], Transition] = {}
    for state in State:
        table[(state, EventKind.DESIRED)] = Transition(
            Updater._on_desired,
            frozenset({state, State.DOWNLOADING, State.VERIFYING, State.ACTIVE, State.FAILED}),
        )
        table[(state, EventKind.DESIRED_CLEARED)] = Transition(Updater._on_cleared, frozenset({State.IDLE}))
    for state in SETTLED:
        table[(state, EventKind.STARTED)] = Transition(Updater._on_started, frozenset({state}))
    for state in IN_PROGRESS:
        table[(state, EventKind.ABORTED)] = Transition(Updater._on_failure_result, frozenset({state, State.FAILED}))
    table.update(
        {
            (State.DOWNLOADING, EventKind.STARTED): Transition(
                Updater._on_started, frozenset({State.DOWNLOADING, State.VERIFYING})
            ),
            (State.VERIFYING, EventKind.STARTED): Transition(Updater._on_started, frozenset({State.VERIFYING})),
            (State.DOWNLOADING, EventKind.CONNECTED): Transition(Updater._on_connected, frozenset({State.DOWNLOADING})),
            (State.DOWNLOADING, EventKind.CHUNK): Transition(
                Updater._on_chunk, frozenset({State.DOWNLOADING, State.VERIFYING, State.FAILED})
            ),
            (State.DOWNLOADING, EventKind.TICK): Transition(
                Updater._on_tick, frozenset({State.DOWNLOADING, State.FAILED})
            ),
            (State.VERIFYING, EventKind.ARTIFACT_VERIFIED): Transition(
                Updater._on_verified, frozenset({State.VERIFYING, State.LOADING})
            ),
            (State.VERIFYING, EventKind.ARTIFACT_REJECTED): Transition(
                Updater._on_failure_result, frozenset({State.VERIFYING, State.FAILED})
            ),
            (State.LOADING, EventKind.MODEL_LOADED): Transition(
                Updater._on_loaded, frozenset({State.LOADING, State.SELF_TEST})
            ),
            (State.LOADING, EventKind.LOAD_FAILED): Transition(
                Updater._on_failure_result, frozenset({State.LOADING, State.FAILED})
            ),
            (State.SELF_TEST, EventKind.SELF_TEST_PASSED): Transition(
                Updater._on_self_test_passed, frozenset({State.SELF_TEST, State.ACTIVE})
            ),
            (State.SELF_TEST, EventKind.SELF_TEST_FAILED): Transition(
                Updater._on_failure_result, frozenset({State.SELF_TEST, State.FAILED})
            ),
        }
    )
    assert all(t.targets <= every for t in table.values())
    return table


TRANSITIONS: dict[tuple[State, EventKind], Transition] = _table()
