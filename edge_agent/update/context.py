"""What the update machine knows between events, and the steps every handler shares (pure: no I/O).

`UpdateContext` holds the journal (the part that survives a restart), the current state, the attempt
counter that makes stale background results recognisable, and the chunk tracker of a download. The
handlers (`edge_agent.update.handlers`) change it through these helpers and plain assignments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edge_agent.clock import Instant
from edge_agent.update.actions import (
    Action,
    DiscardDownload,
    Emit,
    LeaveFanout,
    PruneModels,
    Report,
    RequestChunks,
    SaveJournal,
)
from edge_agent.update.artifact_choice import fanout_filter
from edge_agent.update.chunks import ChunkPolicy, ChunkTracker
from edge_agent.update.events import Event
from edge_agent.update.journal import InstalledModel, Journal, LastError, Outcome, PendingUpdate, Probation
from edge_agent.update.states import State
from protocols import trust
from protocols.chunking import ChunkLayout
from protocols.codes import VERIFICATION_CODES, ErrorCode
from protocols.roots import RootOfTrust
from protocols.v1 import messages_pb2 as pb

REFUSAL_EVENT_INTERVAL_S = 60.0  # at most one event per refusal reason per minute: garbage cannot flood the cloud


@dataclass(frozen=True)
class ProbationPolicy:
    """How long a newly activated model is on probation, and the local health check that rolls it back.
    `probation_s` 0 disables probation (the previous model is let go at activation)."""

    probation_s: float = 0.0
    max_error_rate: float = 0.2  # errors / (inferences + errors) above this fails the probation ...
    min_inferences: int = 50  # ... once at least this many calls were counted
    max_restarts: int = 3  # this many agent starts while on probation is a crash loop: roll back at start
    # the shadow: agreement with the previous model overwhelmingly below this (the sequential test at
    # shadow_alpha: a model that agrees at least this often has at most that chance of EVER being rolled
    # back on it) rolls back; 0: never on the shadow
    min_shadow_agreement: float = 0.0
    shadow_alpha: float = 1e-6


@dataclass(frozen=True)
class UpdaterConfig:
    device_id: str
    root: RootOfTrust  # the root pinned at provisioning; the journal may hold a newer verified version
    runtimes: tuple[str, ...]  # runtimes this device can use, most preferred first
    chunks: ChunkPolicy = ChunkPolicy()
    probation: ProbationPolicy = ProbationPolicy()
    # runtime -> "<agent version>|<runtime version>": what a crash mark is stamped with (update.crash_marks)
    crash_stamps: Mapping[str, str] = field(default_factory=dict)


def event_kind_for(code: str) -> pb.EventKind:
    """The LifecycleEvent kind that reports a failure with this code."""
    if code in VERIFICATION_CODES:
        return pb.EVENT_KIND_VERIFICATION_FAILED
    if code == ErrorCode.SELF_TEST_FAILED:
        return pb.EVENT_KIND_SELF_TEST_FAILED
    return pb.EVENT_KIND_ERROR


class UpdateContext:
    def __init__(self, config: UpdaterConfig, journal: Journal, received_chunks: set[int] | None = None) -> None:
        self.config = config
        self.journal = journal
        self.attempt = 0
        self._requests = 0
        self.tracker: ChunkTracker | None = None
        self.root = self._stored_root(journal)
        self._last_refusal_s: dict[str, float] = {}
        pending = journal.pending
        if pending is None:
            self.state = {Outcome.IDLE: State.IDLE, Outcome.ACTIVE: State.ACTIVE, Outcome.FAILED: State.FAILED}[
                journal.outcome
            ]
            if self.state is State.ACTIVE and journal.probation is not None:
                self.state = State.PROBATION
        elif pending.layout is None:
            # a load journalled as started but never ended: it killed the process (`update.crash`)
            self.state = State.LOADING if pending.load_attempts else State.VERIFYING
        else:
            self.state = State.DOWNLOADING
            self.tracker = self.new_tracker(pending.layout, received_chunks or set())

    def _stored_root(self, journal: Journal) -> RootOfTrust:
        """The newest root this device verified (kept in the journal), re-checked from the pinned one."""
        if not journal.root:
            return self.config.root
        try:
            return self.config.root.advance(pb.TrustChain.FromString(journal.root).roots)
        except (trust.VerificationError, ValueError):
            return self.config.root  # a journal root that does not follow from the pin is not trusted

    @property
    def accepted_counter(self) -> int:
        """The counter of the newest signed assignment accepted; only a higher one is acted on."""
        pending = self.journal.pending
        return max(self.journal.desired_generation, pending.generation if pending else 0)

    def verified_before(self, received_sha256: str) -> bool:
        """Whether the desired state with this digest (as delivered) is the one that verified with the
        accepted counter: the retained message the broker re-delivers on every connect."""
        return self.journal.verified_desired == f"{self.accepted_counter}:{received_sha256}"

    def usable_runtimes(self) -> list[str]:
        """The device's runtimes in preference order, less those whose load killed the agent."""
        return [r for r in self.config.runtimes if r not in self.journal.crashed_runtimes]

    def accept(self, root: RootOfTrust) -> None:
        """Take a verified root: the next save persists it with the step it starts."""
        self.root = root
        keep = b"" if root is self.config.root else root.chain().SerializeToString(deterministic=True)
        self.journal = self.journal.with_(root=keep)

    def refuse(self, code: str, message: str, now: Instant) -> list[Action]:
        """A refused message changes no state; the cloud hears of each reason at most once a minute."""
        last = self._last_refusal_s.get(code)
        if last is not None and now.mono_s - last < REFUSAL_EVENT_INTERVAL_S:
            return []
        self._last_refusal_s[code] = now.mono_s
        return [Emit(event_kind_for(code), "", None, LastError(code, message))]

    def new_probation(self, now: Instant) -> Probation | None:
        """The probation an activation starts now: None when disabled, with no model to fall back to, or
        when it activates the previous model again (a rollback the cloud ordered is not judged against the
        model it rolls back from)."""
        policy, journal = self.config.probation, self.journal
        if policy.probation_s <= 0 or journal.active is None:
            return None
        target = journal.pending.target if journal.pending else None
        if (
            target is not None
            and journal.previous is not None
            and target.artifact_sha256 == journal.previous.artifact_sha256
        ):
            return None
        return Probation(until_ms=now.wall_ms + int(policy.probation_s * 1000))

    def new_tracker(self, layout: ChunkLayout, received: set[int]) -> ChunkTracker:
        valid = {i for i in received if 0 <= i < layout.total_chunks}
        return ChunkTracker(layout.total_chunks, self.config.chunks, received=valid)

    def save(self, **changes: object) -> SaveJournal:
        self.journal = self.journal.with_(**changes)
        return SaveJournal(self.journal)

    def request(self, now: Instant, also: list[int] | None = None) -> list[Action]:
        assert self.tracker is not None and self.journal.pending is not None
        layout = self.journal.pending.layout
        assert layout is not None
        indexes = sorted(set(also or []) | set(self.tracker.next_batch(now.mono_s)))
        if not indexes:
            return []
        self._requests += 1
        request_id = f"{self.journal.boot_count}.{self.journal.pending.generation}.{self._requests}"
        return [RequestChunks(layout.sha256, tuple(indexes), request_id)]

    def fanout(self, pending: PendingUpdate | None = None) -> str | None:
        """The fan-out filter of a download (the pending one by default), from the desired state it keeps."""
        pending = pending or self.journal.pending
        if pending is None or pending.layout is None or not pending.desired or pending.fanout_failed:
            return None
        return fanout_filter(pb.DesiredState.FromString(pending.desired), pending.layout, self.root.fleet)

    def leave_fanout(self, pending: PendingUpdate | None = None) -> list[Action]:
        topic_filter = self.fanout(pending)
        return [] if topic_filter is None else [LeaveFanout(topic_filter)]

    def discard_pending(self) -> list[Action]:
        pending = self.journal.pending
        self.tracker = None
        self.attempt += 1  # whatever the old attempt still has running in the background is now stale
        if pending is not None and pending.layout is not None:
            return [*self.leave_fanout(pending), DiscardDownload(pending.layout.sha256)]
        return []

    def fail(
        self, generation: int, deployment_id: str, code: str, message: str, model: InstalledModel | None = None
    ) -> list[Action]:
        """Give up on the update of `generation`; `model` is the target the failure event names, if known."""
        error = LastError(code, message)
        actions: list[Action] = [Emit(event_kind_for(code), deployment_id, model, error)]
        actions += self.discard_pending()
        self.state = State.FAILED
        actions.append(
            self.save(
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

    def fail_pending(self, code: str, message: str) -> list[Action]:
        pending = self.journal.pending
        assert pending is not None
        return self.fail(pending.generation, pending.deployment_id, code, message, model=pending.target)

    def stale(self, event: Event) -> bool:
        return getattr(event, "attempt", None) != self.attempt
