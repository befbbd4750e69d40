"""An idle agent's tick is cheap: the Tick and HealthCheck it would hand the update machine are built only in
the states whose transitions use them (a download's chunk deadlines, a probation's health), since the
machine ignores them everywhere else (issue 10: the simulator's idle fleet spent its CPU on them)."""

from __future__ import annotations

import time

from support import wait_until
from support.fake_cloud import FakeCloud, MakeAgent, is_state
from support.releases import Keys, make_release

from edge_agent.clock import Instant
from edge_agent.update.events import Event, EventKind
from edge_agent.update.states import State
from protocols.v1 import messages_pb2 as pb

TIMERS = {EventKind.TICK, EventKind.HEALTH}


def test_ticks_reach_the_machine_only_in_the_states_that_use_them(
    make_agent: MakeAgent, cloud: FakeCloud, keys: Keys
) -> None:
    agent = make_agent()  # ticks every 10 ms
    updater = agent._updater
    assert updater is not None
    seen: list[tuple[State, EventKind]] = []
    handle = updater.handle

    def spy(event: Event, now: Instant) -> list:  # type: ignore[type-arg]
        if event.kind in TIMERS:
            seen.append((updater.state, event.kind))
        return handle(event, now)

    updater.handle = spy  # type: ignore[method-assign]  # the real machine, watched
    ticked = agent._next_tick_s
    time.sleep(0.3)
    assert agent._next_tick_s > ticked  # the agent did tick, ~30 times
    assert agent.update_state is State.IDLE and seen == []

    for generation, tag in ((1, "v1"), (2, "v2")):
        cloud.deploy(agent.device_id, make_release(keys.signer, tag, generation), generation=generation)
        assert agent.wait_for(lambda s, g=generation: is_state(s, pb.UPDATE_STATE_ACTIVE, g), 10), agent.status()
    assert agent.update_state is State.PROBATION  # v1 kept to fall back to: its health is checked every tick
    assert wait_until(lambda: (State.PROBATION, EventKind.HEALTH) in seen, timeout_s=5)
    assert {(state, kind) for state, kind in seen} <= {(State.DOWNLOADING, EventKind.TICK),
                                                        (State.PROBATION, EventKind.HEALTH)}  # fmt: skip
