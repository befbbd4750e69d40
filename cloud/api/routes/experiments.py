"""A/B experiments: start one (deployer), read its per-arm results with confidence intervals (anyone with a
token), promote the winner or a chosen arm, or stop it (deployer); each change commits with its audit row."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import Query, status
from sqlmodel import Session, col, select

from cloud.api.auth import OperatorDep, api_router
from cloud.api.deps import ServicesDep, SessionDep
from cloud.api.schemas import ArmView, ExperimentCreate, ExperimentView, PromoteRequest
from cloud.experiments import service as experiments
from cloud.experiments.records import Experiment, Metric
from cloud.identity import audit

router = api_router(prefix="/experiments", tags=["experiments"])


def view(session: Session, experiment: Experiment) -> ExperimentView:
    found = experiments.results(session, experiment)
    assigned = Counter(experiment.arms.values())
    return ExperimentView(
        id=experiment.id, model_id=experiment.model_id, metric=experiment.metric, state=experiment.state,
        winner=experiment.winner, leader=found.comparison.winner, p_value=found.comparison.p_value,
        alpha=experiment.alpha, min_trials=experiment.min_trials,
        arms=[ArmView(arm=a.arm, version=a.version, devices=a.devices, assigned=assigned[a.arm], trials=a.trials,
                      successes=a.successes, rate=a.rate, interval=a.interval) for a in found.arms],
        created_at_ms=experiment.created_at_ms, ended_at_ms=experiment.ended_at_ms,
    )  # fmt: skip


@router.post("", response_model=ExperimentView, status_code=status.HTTP_201_CREATED)
def start_experiment(
    session: SessionDep, services: ServicesDep, operator: OperatorDep, body: ExperimentCreate
) -> ExperimentView:
    def audit_row(own: Session, experiment: Experiment) -> None:
        audit.record_by(own, operator, "experiment.start", experiment.id, body.model_dump())

    session.commit()  # end this request session's transaction: on SQLite it would hold the write lock
    request = experiments.ExperimentRequest(
        model_id=body.model_id, version_a=body.version_a, version_b=body.version_b, device_ids=list(body.device_ids),
        labels=dict(body.labels), share_b=body.share_b, metric=Metric(body.metric), alpha=body.alpha,
        min_trials=body.min_trials,
    )  # fmt: skip
    experiment = experiments.start(services.deployer, request, actor_audit=audit_row)
    return view(session, experiments.get(session, experiment.id))


@router.get("", response_model=list[ExperimentView])
def list_experiments(session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[ExperimentView]:
    rows = session.exec(select(Experiment).order_by(col(Experiment.created_at_ms).desc()).limit(limit))
    return [view(session, e) for e in rows]


@router.get("/{experiment_id}", response_model=ExperimentView)
def get_experiment(session: SessionDep, experiment_id: str) -> ExperimentView:
    return view(session, experiments.get(session, experiment_id))


@router.post("/{experiment_id}/promote", response_model=ExperimentView)
def promote_experiment(
    session: SessionDep, services: ServicesDep, operator: OperatorDep, experiment_id: str, body: PromoteRequest
) -> ExperimentView:
    """Deploy the winning arm's version (or `arm`'s) to every device of the experiment, in one action."""

    def audit_row(own: Session, experiment: Experiment) -> None:
        audit.record_by(own, operator, "experiment.promote", experiment.id,
                        {"arm": experiment.winner, "deployment_id": experiment.promoted_deployment})  # fmt: skip

    session.commit()
    experiments.promote(services.deployer, experiment_id, body.arm, actor_audit=audit_row)
    session.expire_all()
    return view(session, experiments.get(session, experiment_id))


@router.post("/{experiment_id}/stop", response_model=ExperimentView)
def stop_experiment(session: SessionDep, operator: OperatorDep, experiment_id: str) -> ExperimentView:
    experiment = experiments.stop(session, experiment_id)
    audit.record_by(session, operator, "experiment.stop", experiment_id)
    session.commit()
    return view(session, experiment)
