"""The update path as an explicit state machine (pure: no I/O, no clock, no threads).

`Updater.handle(event, now)` looks the (state, event kind) pair up in the transition table
(`edge_agent.update.table`), runs its handler (`edge_agent.update.handlers`) and returns the actions for
the agent to carry out, in order (`edge_agent.executor`). `Updater.view()` is what the ReportedState needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.clock import Instant
from edge_agent.update.actions import Action
from edge_agent.update.context import UpdateContext, UpdaterConfig, event_kind_for
from edge_agent.update.events import Event, EventKind
from edge_agent.update.journal import InstalledModel, LastError
from edge_agent.update.states import State
from edge_agent.update.table import TRANSITIONS

__all__ = ["TRANSITIONS", "Updater", "UpdaterConfig", "UpdaterView", "event_kind_for"]


@dataclass(frozen=True)
class UpdaterView:
    """What the ReportedState needs from the updater."""

    state: State
    active: InstalledModel | None
    previous: InstalledModel | None
    deployment_id: str
    desired_generation: int
    last_error: LastError | None
    probation_until_ms: int = 0  # the active model is on probation until then (0: it is not)


class Updater(UpdateContext):
    def handle(self, event: Event, now: Instant) -> list[Action]:
        transition = TRANSITIONS.get((self.state, event.kind))
        if transition is None:
            return []
        return transition.handler(self, event, now)

    def expects(self, kind: EventKind) -> bool:
        """Whether an event of this kind does anything in the current state (`handle` ignores the rest):
        lets the agent skip building the events of every tick that an idle machine would drop."""
        return (self.state, kind) in TRANSITIONS

    def view(self) -> UpdaterView:
        pending = self.journal.pending
        return UpdaterView(
            state=self.state,
            active=self.journal.active,
            previous=self.journal.previous,
            deployment_id=pending.deployment_id if pending else self.journal.deployment_id,
            desired_generation=pending.generation if pending else self.journal.desired_generation,
            last_error=None if pending else self.journal.last_error,
            probation_until_ms=self.journal.probation.until_ms if self.journal.probation else 0,
        )
