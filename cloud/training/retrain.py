"""Champion/challenger retraining: field data in, a better model out, or nothing.

`retrain` runs the steps of `cloud.training.candidates` in a row (snapshot and train, compile, evaluate,
register a winner as `challenger`), then, by policy, hands a winner to a gated canary rollout or leaves it
for an operator to approve (`edgefleet pipeline rollout`). The steps also run one per process
(`edgefleet pipeline train|compile|evaluate|register`); this is the same code, not a second copy.

The run is recorded whatever the outcome: a challenger that loses leaves a succeeded run with its figures
and no model version. Promotion (champion and production aliases) is its own step: `promote` (or the
rollout controller's, when a challenger's canary completes: `cloud.rollout.promotion`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from cloud import registry
from cloud.db import session_scope
from cloud.db.tables import Deployment, DeploymentCreate, Device
from cloud.errors import InvalidRequestError
from cloud.registry import aliases, field_data
from cloud.registry.artifacts import ArtifactStore
from cloud.rollout.policy import GateRequest, RolloutPolicy
from cloud.training import candidates
from cloud.training import champion as rule
from cloud.training.triggers import Trigger
from protocols.signing import Signer


@dataclass(frozen=True)
class RetrainPolicy:
    margin: rule.MarginPolicy = field(default_factory=rule.MarginPolicy)
    eval_share: float = 0.5  # of the field rows, held out to judge on
    on_win: Literal["canary", "approval"] = "canary"
    canary: float = 1  # devices (>= 1) or a share (< 1) in the canary wave
    dwell_s: float = 60.0
    min_inferences: int = 200  # per gate judgement, as in any rollout
    gate_overrides: dict[str, float] = field(default_factory=dict)  # other GateRequest fields, by name
    manifest_valid_days: float = 90.0


@dataclass
class RetrainResult:
    run_id: str
    model_id: str
    trigger: Trigger
    champion: str
    challenger: str | None  # the registered version; None when it did not win
    verdict: rule.Verdict
    field_eval: rule.Comparison
    reference: rule.Comparison
    datasets: dict[str, str]  # role -> content hash
    step_timings_s: dict[str, float]
    deployment_id: str | None = None
    dropped_labels: int = 0  # field labels that are none of the model's classes


def devices_running(session: Session, model_id: str) -> list[str]:
    """The devices whose active model is `model_id`: where a challenger's canary goes by default."""
    query = select(Device.id).where(Device.active_model_id == model_id)
    return sorted(session.exec(query))


def retrain(
    engine: Engine,
    store: ArtifactStore,
    signer: Signer,
    model_id: str,
    *,
    trigger: Trigger,
    actor: str,
    policy: RetrainPolicy | None = None,
    selection: field_data.Selection | None = None,
    field_dataset: str | None = None,
    deploy: Callable[[DeploymentCreate, RolloutPolicy], Deployment] | None = None,
    targets: Sequence[str] = (),
    progress: Callable[[str], None] = lambda _step: None,
) -> RetrainResult:
    """One champion/challenger run: the steps of `candidates` in a row. `field_dataset` names a snapshot to
    use (else one is taken now with `selection`); `deploy` starts the canary rollout of a winner on `targets`
    when the policy says canary."""
    policy = policy or RetrainPolicy()
    trained = candidates.train(engine, store, model_id, trigger=trigger, margin=policy.margin,
                               eval_share=policy.eval_share, selection=selection, field_dataset=field_dataset,
                               progress=progress)  # fmt: skip
    candidates.compile_candidate(engine, store, trained.id, progress)
    judged = candidates.evaluate(engine, store, trained.id, progress)
    challenger = None
    if judged.verdict.outcome == rule.Outcome.WIN:
        challenger = candidates.register(engine, store, signer, trained.id, actor=actor,
                                         manifest_valid_days=policy.manifest_valid_days, progress=progress)  # fmt: skip
    result = RetrainResult(
        run_id=trained.run_id, model_id=model_id, trigger=trigger, champion=trained.champion, challenger=challenger,
        verdict=judged.verdict, field_eval=judged.field_eval, reference=judged.reference, datasets=trained.datasets,
        step_timings_s={}, dropped_labels=trained.dropped_labels,
    )  # fmt: skip
    if challenger is not None and policy.on_win == "canary" and deploy is not None and targets:
        progress("canary rollout")
        started = time.perf_counter()
        deployment = deploy(DeploymentCreate(model_id=model_id, version=challenger, device_ids=list(targets)),
                            rollout_policy(policy))  # fmt: skip
        result.deployment_id = deployment.id
        with session_scope(engine) as session:
            registry.record_step(session, trained.run_id, "canary rollout", time.perf_counter() - started)
    with session_scope(engine) as session:
        result.step_timings_s = dict(registry.get_run(session, trained.run_id).step_timings_s)
    return result


def rollout_policy(policy: RetrainPolicy) -> RolloutPolicy:
    """A canary like any release's, except two gates: a retrained model is meant to predict differently
    from the champion on drifted inputs, so prediction shift and shadow agreement with the champion are
    not held against it (its quality was judged on labelled data instead). Installs, errors and latency
    are gated as usual."""
    gates = GateRequest(**{"max_prediction_psi": 10.0, "min_shadow_agreement": 0.0,
                           "min_inferences": policy.min_inferences, **policy.gate_overrides})  # fmt: skip
    return RolloutPolicy(strategy="canary", canary=policy.canary, dwell_s=policy.dwell_s, gates=gates)


def promote(session: Session, model_id: str, version: str, *, actor: str, reason: str) -> list[str]:
    """Make `version` the champion and production (once its rollout has done its job); returns the
    aliases that moved."""
    if not reason.strip():
        raise InvalidRequestError("a promotion says why (reason)")
    moved = []
    for alias in (aliases.CHAMPION, aliases.PRODUCTION):
        if aliases.move(session, model_id, alias, version, actor=actor, reason=reason) is not None:
            moved.append(alias)
    return moved
