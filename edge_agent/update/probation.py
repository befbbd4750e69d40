"""Probation: after an activation the previous model stays loaded; the agent judges the new one locally and
rolls back by itself when it fails, with or without a cloud (pure: no I/O, no clock, no threads).

    SELF_TEST --passed--> PROBATION (a previous model to fall back to, probation_s > 0; else ACTIVE)
    PROBATION --health: error rate over the limit--> FAILED (rolled back, "probation_failed")
    PROBATION --health: shadow agreement overwhelmingly low--> FAILED (rolled back, "probation_failed")
    PROBATION --health: the probation time is over--> ACTIVE (the previous model is unloaded)
    PROBATION --desired: another model--> the update path as from ACTIVE (the probation ends)
    a start while on probation counts a restart; `max_restarts` of them roll back before serving (`count_boot`)

The handlers here are rows of the transition table (`edge_agent.update.table`) like those of
`edge_agent.update.handlers`. The probation survives a restart in the journal (`Journal.probation`).
"""

from __future__ import annotations

import math
from dataclasses import replace

from edge_agent.clock import Instant
from edge_agent.update import handlers
from edge_agent.update.actions import Action, Emit, EndProbation, PruneModels, Report, RollBack, SaveJournal
from edge_agent.update.context import ProbationPolicy, UpdateContext
from edge_agent.update.events import Event, HealthCheck
from edge_agent.update.journal import InstalledModel, Journal, LastError, Outcome
from edge_agent.update.states import State
from protocols.codes import ErrorCode
from protocols.sequential import error_log_likelihood_ratio, even_alternatives
from protocols.v1 import messages_pb2 as pb


def rolled_back(journal: Journal, error: LastError) -> Journal:
    """The journal after a failed probation: the previous model is active again, the failed one dropped, and
    the assignment counts as handled (FAILED), so that a re-delivery of it never re-activates the model."""
    return journal.with_(
        active=journal.previous, previous=None, outcome=Outcome.FAILED, last_error=error, probation=None
    )


def count_boot(journal: Journal, policy: ProbationPolicy) -> tuple[Journal, Emit | None]:
    """At start (before serving): count a restart of a model on probation; a crash loop rolls it back.
    Returns the journal to start from and, if it rolled back, the ROLLED_BACK event to announce."""
    probation = journal.probation
    if probation is None or journal.pending is not None or journal.previous is None:
        return journal, None
    restarts = probation.restarts + 1
    if restarts < policy.max_restarts:
        return journal.with_(probation=replace(probation, restarts=restarts)), None
    model = _name(journal.active)
    error = LastError(
        ErrorCode.PROBATION_FAILED, f"crash loop: the agent started {restarts} times while {model} was on probation"
    )
    return rolled_back(journal, error), Emit(pb.EVENT_KIND_ROLLED_BACK, journal.deployment_id, journal.active, error)


def on_health(up: UpdateContext, event: Event, now: Instant) -> list[Action]:
    assert isinstance(event, HealthCheck)
    probation, policy = up.journal.probation, up.config.probation
    assert probation is not None
    calls = event.inferences + event.errors
    if calls >= max(1, policy.min_inferences) and event.errors / calls > policy.max_error_rate:
        return _roll_back(up, f"error rate {event.errors}/{calls} above {policy.max_error_rate:g} while on probation")
    if shadow_disagrees(policy, event.shadow_compared, event.shadow_agreed):
        return _roll_back(up, f"shadow agreement {event.shadow_agreed}/{event.shadow_compared} with the previous "
                              f"model, surely below {policy.min_shadow_agreement:g} (sequential test, false alarm "
                              f"<= {policy.shadow_alpha:g}) while on probation")  # fmt: skip
    if now.wall_ms < probation.until_ms:
        return []
    up.state = State.ACTIVE
    return [up.save(probation=None), EndProbation(), Report()]


def shadow_disagrees(policy: ProbationPolicy, compared: int, agreed: int) -> bool:
    """True when the shadow's disagreements are overwhelming evidence that the new model agrees with the
    previous one less often than policy.min_shadow_agreement: checked every tick on the counts so far, the
    time-uniform test keeps a model that agrees that often rolled back with at most policy.shadow_alpha."""
    limit = 1.0 - policy.min_shadow_agreement
    if policy.min_shadow_agreement <= 0 or compared <= agreed:
        return False
    evidence = error_log_likelihood_ratio(compared - agreed, agreed, limit, even_alternatives(limit))
    return bool(evidence >= math.log(1 / policy.shadow_alpha))


def on_desired_in_probation(up: UpdateContext, event: Event, now: Instant) -> list[Action]:
    """A desired state while on probation: another model ends the probation and goes the usual way; the
    previous model (the cloud rolls back) is swapped back in at once, still loaded; a refusal, a re-delivery
    or a new assignment of the model on probation lets the probation go on."""
    probation, active = up.journal.probation, up.journal.active
    up.journal = up.journal.with_(probation=None)
    actions = handlers.on_desired(up, event, now, previous_loaded=True)
    if any(isinstance(a, RollBack) for a in actions):
        return actions  # the swap ends the probation (stops shadowing, lets the model it replaces go)
    if up.state is State.PROBATION or (up.state is State.ACTIVE and up.journal.active == active):
        up.state = State.PROBATION
        up.journal = up.journal.with_(probation=probation)
        saved = any(isinstance(a, SaveJournal) for a in actions)
        return actions + ([SaveJournal(up.journal)] if saved else [])
    return [EndProbation(), *actions]


def _roll_back(up: UpdateContext, message: str) -> list[Action]:
    journal = up.journal
    assert journal.previous is not None
    failed, error = journal.active, LastError(ErrorCode.PROBATION_FAILED, f"{_name(journal.active)}: {message}")
    up.state = State.FAILED
    up.journal = rolled_back(journal, error)
    return [
        SaveJournal(up.journal),
        RollBack(journal.previous),
        Emit(pb.EVENT_KIND_ROLLED_BACK, journal.deployment_id, failed, error),
        PruneModels(up.journal.models_on_disk()),
        Report(),
    ]


def _name(model: InstalledModel | None) -> str:
    if model is None:
        return "no model"
    manifest = model.manifest()
    return f"{manifest.model_id} {manifest.version}"
