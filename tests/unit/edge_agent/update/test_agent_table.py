"""The transition table on its own: real states and kinds only, handlers from the handlers module, and the
rows a reader relies on. (That each handler lands only in its declared targets is driven, pair by pair,
in test_agent_machine.py.)"""

from __future__ import annotations

from edge_agent.update import crash, handlers, probation
from edge_agent.update.events import EventKind
from edge_agent.update.machine import TRANSITIONS
from edge_agent.update.states import IN_PROGRESS, SETTLED, State


def test_the_table_names_only_real_states() -> None:
    assert all(t.targets <= set(State) for t in TRANSITIONS.values())
    assert all(isinstance(s, State) and isinstance(k, EventKind) for s, k in TRANSITIONS)


def test_every_handler_is_a_handler_function() -> None:
    modules = (handlers, probation, crash)
    assert all(any(getattr(m, t.handler.__name__, None) is t.handler for m in modules) for t in TRANSITIONS.values())


def test_every_state_takes_a_desired_state_and_a_trust_chain_that_keeps_it() -> None:
    for state in State:
        expected = probation.on_desired_in_probation if state is State.PROBATION else handlers.on_desired
        assert TRANSITIONS[(state, EventKind.DESIRED)].handler is expected
        assert state in TRANSITIONS[(state, EventKind.DESIRED)].targets  # a refusal stays put
        assert TRANSITIONS[(state, EventKind.TRUST)].targets == {state}


def test_only_an_update_in_progress_can_be_aborted() -> None:
    aborting = {state for state, kind in TRANSITIONS if kind is EventKind.ABORTED}
    assert aborting == IN_PROGRESS
    assert not aborting & SETTLED
