"""Running an A/B experiment: start it (two ordinary deployments on a stable split), read its results, and
end it by promoting an arm to every device of the experiment, or by stopping it.

The split is the stable hash order of `cloud.rollout.waves` seeded with the experiment id: the first
`share_b` of the targets run version B, the rest version A; a device stays in its arm for the whole
experiment. Results are read from the telemetry each arm's devices sent for their arm's version since the
experiment started. Everything is committed first and published after, as the Deployer does.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func
from sqlalchemy import select as sql_select
from sqlmodel import Session, col

from cloud import registry
from cloud.db.tables import DeploymentCreate, TelemetryRecord
from cloud.errors import ConflictError, InvalidRequestError, NotFoundError
from cloud.experiments.records import Experiment, ExperimentState, Metric
from cloud.experiments.stats import Comparison, Proportion, compare, wilson_interval
from cloud.rollout.deployer import Deployer
from cloud.rollout.plan import Outgoing, plan_deployment, resolve_targets
from cloud.rollout.waves import stable_order
from cloud.types import now_ms

ARMS = ("a", "b")


@dataclass(frozen=True)
class ExperimentRequest:
    model_id: str
    version_a: str
    version_b: str
    device_ids: list[str]
    labels: dict[str, str]
    share_b: float = 0.5
    metric: Metric = Metric.ACCURACY
    alpha: float = 0.05
    min_trials: int = 100


@dataclass(frozen=True)
class ArmResult:
    arm: str
    version: str
    devices: int
    trials: int  # labelled inferences (accuracy) or attempted inferences (error rate)
    successes: int  # correct ones, or failed ones
    rate: float | None
    interval: tuple[float, float] | None  # 95 % Wilson interval of the rate


@dataclass(frozen=True)
class Results:
    metric: Metric
    arms: list[ArmResult]
    comparison: Comparison


Audit = Callable[[Session, Experiment], object]  # writes in the same transaction (the API's audit row)


def start(deployer: Deployer, request: ExperimentRequest, *, actor_audit: Audit | None = None) -> Experiment:
    """Split the targets, deploy each arm's version to its devices, record the experiment; then publish."""
    if not 0 < request.share_b < 1:
        raise InvalidRequestError(f"share_b is the share of devices on version B, in (0, 1), not {request.share_b}")
    director = deployer.director
    with Session(deployer.engine, expire_on_commit=False) as session:
        a = registry.get_model_version(session, request.model_id, request.version_a)
        b = registry.get_model_version(session, request.model_id, request.version_b)
        if a.id == b.id:
            raise InvalidRequestError("an experiment compares two different versions")
        targets = resolve_targets(session, request.device_ids, request.labels)
        if len(targets) < 2:
            raise InvalidRequestError(f"an experiment needs at least two devices; the targets are {len(targets)}")
        experiment_id = uuid.uuid4().hex[:16]
        ordered = stable_order(experiment_id, targets)
        cut = min(len(ordered) - 1, max(1, math.floor(len(ordered) * request.share_b)))
        arms = {device_id: ("b" if i < cut else "a") for i, device_id in enumerate(ordered)}
        outgoing: list[Outgoing] = []
        deployments = {}
        for arm, mv in (("a", a), ("b", b)):
            devices = [d for d in ordered if arms[d] == arm]
            deployment, planned = plan_deployment(
                session, DeploymentCreate(model_id=mv.model_id, version=mv.version, device_ids=devices),
                director=director, chunk_size_bytes=deployer.chunk_size_bytes, clock=deployer.clock,
            )  # fmt: skip
            deployments[arm] = deployment.id
            outgoing += planned
        experiment = Experiment(
            id=experiment_id, model_id=a.model_id, version_a=a.version, version_b=b.version,
            deployment_a=deployments["a"], deployment_b=deployments["b"], metric=request.metric,
            alpha=request.alpha, min_trials=request.min_trials, arms=arms, created_at_ms=deployer.clock(),
        )  # fmt: skip
        session.add(experiment)
        if actor_audit is not None:
            actor_audit(session, experiment)
        session.commit()
    deployer.publish(outgoing, fleet=director.fleet)
    return experiment


def results(session: Session, experiment: Experiment) -> Results:
    metric = Metric(experiment.metric)
    arms = []
    for arm, version in (("a", experiment.version_a), ("b", experiment.version_b)):
        devices = [d for d, a in experiment.arms.items() if a == arm]
        row = session.execute(  # five sums in one query: sqlmodel's typed select stops at four columns
            sql_select(
                func.count(func.distinct(TelemetryRecord.device_id)),
                func.coalesce(func.sum(TelemetryRecord.inference_count), 0),
                func.coalesce(func.sum(TelemetryRecord.error_count), 0),
                func.coalesce(func.sum(TelemetryRecord.labelled_count), 0),
                func.coalesce(func.sum(TelemetryRecord.correct_count), 0),
            ).where(
                col(TelemetryRecord.device_id).in_(devices),
                col(TelemetryRecord.model_id) == experiment.model_id,
                col(TelemetryRecord.model_version) == version,
                col(TelemetryRecord.window_end_ms) >= experiment.created_at_ms,
            )
        ).one()
        reporting, inferences, errors, labelled, correct = (int(v) for v in row)
        p = Proportion(correct, labelled) if metric is Metric.ACCURACY else Proportion(errors, inferences + errors)
        arms.append(ArmResult(arm, version, reporting, p.trials, p.successes, p.rate, wilson_interval(p)))
    comparison = compare(Proportion(arms[0].successes, arms[0].trials), Proportion(arms[1].successes, arms[1].trials),
                         higher_is_better=metric.higher_is_better, alpha=experiment.alpha,
                         min_trials=experiment.min_trials)  # fmt: skip
    return Results(metric, arms, comparison)


def promote(
    deployer: Deployer, experiment_id: str, arm: str | None = None, *, actor_audit: Audit | None = None
) -> Experiment:
    """Deploy one arm's version to every device of the experiment (the winner when arm is None: refused
    with 409 until there is a significant one) and end the experiment."""
    director = deployer.director
    with Session(deployer.engine, expire_on_commit=False) as session:
        experiment = _running(session, experiment_id)
        if arm is None:
            arm = results(session, experiment).comparison.winner
            if arm is None:
                raise ConflictError(f"experiment {experiment_id} has no significant winner yet; promote an arm "
                                    f"explicitly (arm=a or arm=b) or wait for more telemetry")  # fmt: skip
        if arm not in ARMS:
            raise InvalidRequestError(f"arm is 'a' or 'b', not {arm!r}")
        version = experiment.version_a if arm == "a" else experiment.version_b
        deployment, outgoing = plan_deployment(
            session,
            DeploymentCreate(model_id=experiment.model_id, version=version, device_ids=sorted(experiment.arms)),
            director=director, chunk_size_bytes=deployer.chunk_size_bytes, clock=deployer.clock,
        )  # fmt: skip
        experiment.state, experiment.winner = ExperimentState.PROMOTED, arm
        experiment.promoted_deployment, experiment.ended_at_ms = deployment.id, now_ms()
        session.add(experiment)
        if actor_audit is not None:
            actor_audit(session, experiment)
        session.commit()
    deployer.publish(outgoing, fleet=director.fleet)
    return experiment


def stop(session: Session, experiment_id: str) -> Experiment:
    """End without promoting (not committed): each device keeps its arm's version."""
    experiment = _running(session, experiment_id)
    experiment.state, experiment.ended_at_ms = ExperimentState.STOPPED, now_ms()
    session.add(experiment)
    return experiment


def get(session: Session, experiment_id: str) -> Experiment:
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        raise NotFoundError(f"no experiment {experiment_id}")
    return experiment


def _running(session: Session, experiment_id: str) -> Experiment:
    experiment = get(session, experiment_id)
    if experiment.state != ExperimentState.RUNNING:
        raise ConflictError(f"experiment {experiment_id} is {experiment.state}")
    return experiment
