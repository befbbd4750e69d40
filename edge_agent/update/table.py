"""The update machine's transition table: ONE literal, one row per (state, event kind) pair it accepts.

    IDLE/ACTIVE/FAILED/PROBATION --desired--> DOWNLOADING --all chunks--> VERIFYING --digest ok--> LOADING
        --loaded--> SELF_TEST --passed--> ACTIVE, or PROBATION when there is a previous model to fall back to
    PROBATION --health: time over--> ACTIVE;  --health: error rate too high--> FAILED (rolled back)
    any failure ----------------------------------------------------------------------> FAILED
    LOADING --the load crashed (a child, or the agent: seen at the next start)--> another artifact, or FAILED
    VERIFYING --digest wrong, chunks from the fleet-wide topics--> DOWNLOADING again, every chunk per device
    (the previous model keeps serving throughout; only ACTIVE/PROBATION swap it, a rollback swaps it back)
    a desired state acts only once its signed assignment and manifest verify; a refused one, and a
    trust chain (newer root versions), leave the state where it was

Each row names its handler (`edge_agent.update.handlers`) and every state that handler may leave the
machine in; a test drives each row and checks the machine lands in one of them. Pairs missing from the
table are ignored (a chunk after the download finished, a stale background result). Rows are grouped by
state, so "what does VERIFYING accept?" is read off one block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.clock import Instant
from edge_agent.update import crash as c
from edge_agent.update import handlers as h
from edge_agent.update import probation as p
from edge_agent.update.actions import Action
from edge_agent.update.context import UpdateContext
from edge_agent.update.events import Event
from edge_agent.update.events import EventKind as E
from edge_agent.update.states import State

Handler = Callable[[UpdateContext, Event, Instant], list[Action]]

IDLE, DOWNLOADING, VERIFYING, LOADING = State.IDLE, State.DOWNLOADING, State.VERIFYING, State.LOADING
SELF_TEST, ACTIVE, FAILED, PROBATION = State.SELF_TEST, State.ACTIVE, State.FAILED, State.PROBATION


@dataclass(frozen=True)
class Transition:
    handler: Handler
    targets: frozenset[State]  # the states the handler may leave the machine in

    def __init__(self, handler: Handler, targets: set[State]) -> None:
        object.__setattr__(self, "handler", handler)
        object.__setattr__(self, "targets", frozenset(targets))


TRANSITIONS: dict[tuple[State, E], Transition] = {
    # IDLE
    (IDLE, E.STARTED): Transition(h.on_started, {IDLE}),
    (IDLE, E.DESIRED): Transition(h.on_desired, {IDLE, DOWNLOADING, VERIFYING, ACTIVE, FAILED}),
    (IDLE, E.TRUST): Transition(h.on_trust, {IDLE}),
    # DOWNLOADING
    (DOWNLOADING, E.STARTED): Transition(h.on_started, {DOWNLOADING, VERIFYING}),
    (DOWNLOADING, E.CONNECTED): Transition(h.on_connected, {DOWNLOADING}),
    (DOWNLOADING, E.CHUNK): Transition(h.on_chunk, {DOWNLOADING, VERIFYING, FAILED}),
    (DOWNLOADING, E.FANOUT_SUBSCRIBED): Transition(h.on_fanout_subscribed, {DOWNLOADING}),
    (DOWNLOADING, E.TICK): Transition(h.on_tick, {DOWNLOADING, FAILED}),
    (DOWNLOADING, E.ABORTED): Transition(h.on_failure_result, {DOWNLOADING, FAILED}),
    (DOWNLOADING, E.DESIRED): Transition(h.on_desired, {DOWNLOADING, VERIFYING, ACTIVE, FAILED, IDLE}),
    (DOWNLOADING, E.TRUST): Transition(h.on_trust, {DOWNLOADING}),
    # VERIFYING
    (VERIFYING, E.STARTED): Transition(h.on_started, {VERIFYING}),
    (VERIFYING, E.ARTIFACT_VERIFIED): Transition(h.on_verified, {VERIFYING, LOADING}),
    (VERIFYING, E.ARTIFACT_REJECTED): Transition(h.on_failure_result, {VERIFYING, DOWNLOADING, FAILED}),
    (VERIFYING, E.ABORTED): Transition(h.on_failure_result, {VERIFYING, FAILED}),
    (VERIFYING, E.DESIRED): Transition(h.on_desired, {VERIFYING, DOWNLOADING, ACTIVE, FAILED, IDLE}),
    (VERIFYING, E.TRUST): Transition(h.on_trust, {VERIFYING}),
    # LOADING (a start here means the journalled load killed the process: `update.crash`)
    (LOADING, E.STARTED): Transition(c.on_load_interrupted, {VERIFYING, DOWNLOADING, FAILED}),
    (LOADING, E.LOAD_CRASHED): Transition(c.on_load_crashed, {LOADING, DOWNLOADING, VERIFYING, FAILED}),
    (LOADING, E.MODEL_LOADED): Transition(h.on_loaded, {LOADING, SELF_TEST}),
    (LOADING, E.LOAD_FAILED): Transition(h.on_failure_result, {LOADING, FAILED}),
    (LOADING, E.ABORTED): Transition(h.on_failure_result, {LOADING, FAILED}),
    (LOADING, E.DESIRED): Transition(h.on_desired, {LOADING, DOWNLOADING, VERIFYING, ACTIVE, FAILED, IDLE}),
    (LOADING, E.TRUST): Transition(h.on_trust, {LOADING}),
    # SELF_TEST
    (SELF_TEST, E.SELF_TEST_PASSED): Transition(h.on_self_test_passed, {SELF_TEST, ACTIVE, PROBATION}),
    (SELF_TEST, E.SELF_TEST_FAILED): Transition(h.on_failure_result, {SELF_TEST, FAILED}),
    (SELF_TEST, E.ABORTED): Transition(h.on_failure_result, {SELF_TEST, FAILED}),
    (SELF_TEST, E.DESIRED): Transition(h.on_desired, {SELF_TEST, DOWNLOADING, VERIFYING, ACTIVE, FAILED, IDLE}),
    (SELF_TEST, E.TRUST): Transition(h.on_trust, {SELF_TEST}),
    # ACTIVE
    (ACTIVE, E.STARTED): Transition(h.on_started, {ACTIVE}),
    (ACTIVE, E.DESIRED): Transition(h.on_desired, {ACTIVE, DOWNLOADING, VERIFYING, FAILED, IDLE}),
    (ACTIVE, E.TRUST): Transition(h.on_trust, {ACTIVE}),
    # PROBATION (the new model serves; the previous one stays loaded: shadowed, and ready to roll back to)
    (PROBATION, E.STARTED): Transition(h.on_started, {PROBATION}),
    (PROBATION, E.HEALTH): Transition(p.on_health, {PROBATION, ACTIVE, FAILED}),
    (PROBATION, E.DESIRED): Transition(p.on_desired_in_probation,
                                        {PROBATION, DOWNLOADING, VERIFYING, ACTIVE, FAILED, IDLE}),
    (PROBATION, E.TRUST): Transition(h.on_trust, {PROBATION}),
    # FAILED
    (FAILED, E.STARTED): Transition(h.on_started, {FAILED}),
    (FAILED, E.DESIRED): Transition(h.on_desired, {FAILED, DOWNLOADING, VERIFYING, ACTIVE, IDLE}),
    (FAILED, E.TRUST): Transition(h.on_trust, {FAILED}),
}
