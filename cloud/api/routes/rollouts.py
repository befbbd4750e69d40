"""Staged rollouts: plan (or only preview with `dry_run`), follow, and steer them (deployer or admin to
change; anyone with a token to read). Every change commits with its audit row."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response, status
from pydantic import TypeAdapter
from sqlmodel import Session, col, select

from cloud.api.auth import OperatorDep, api_router
from cloud.api.deps import ServicesDep, SessionDep, cached_json
from cloud.api.schemas import GateSampleView, RolloutCreate, RolloutDecisionView, RolloutPlanView, RolloutView
from cloud.db import TargetStatus
from cloud.db.tables import Deployment
from cloud.errors import ConfigurationError, NotFoundError
from cloud.identity import audit
from cloud.rollout import RolloutController, target_counts
from cloud.rollout.records import Rollout, RolloutDecision, RolloutGateSample
from cloud.rollout.staged import preview

router = api_router(prefix="/rollouts", tags=["rollouts"])
ACTIONS = ("pause", "resume", "cancel", "rollback")
ROLLOUT_LIST = TypeAdapter(list[RolloutView])
ROLLOUT = TypeAdapter(RolloutView)


def view(session: Session, rollout: Rollout, *, decisions: int = 0) -> RolloutView:
    deployment = session.get(Deployment, rollout.deployment_id)
    assert deployment is not None  # a foreign key
    # counted by status in one grouped query, not read target by target (10,000 rows per poll at fleet size):
    # a rollout's targets are exactly its opened waves' devices, made when each wave opens (_open_next_wave)
    counts = target_counts(session, [deployment.id])[deployment.id]
    rows: list[RolloutDecision] = []
    if decisions:
        query = select(RolloutDecision).where(RolloutDecision.deployment_id == rollout.deployment_id)
        rows = list(session.exec(query.order_by(col(RolloutDecision.id).desc()).limit(decisions)))
    return RolloutView(
        deployment_id=deployment.id, model_id=deployment.model_id, version=deployment.version,
        state=rollout.state, reason=rollout.reason, strategy=rollout.strategy, gates=rollout.gates,
        on_breach=rollout.on_breach, wave_sizes=[len(w) for w in rollout.waves], current_wave=rollout.current_wave,
        wave_opened_ms=rollout.wave_opened_ms, wave_passed_ms=rollout.wave_passed_ms,
        devices_done=counts[TargetStatus.SUCCEEDED], devices_failed=counts[TargetStatus.FAILED],
        skipped=rollout.skipped, last_verdict=rollout.last_verdict, created_at_ms=rollout.created_at_ms,
        updated_at_ms=rollout.updated_at_ms,
        decisions=[RolloutDecisionView.model_validate(r, from_attributes=True) for r in reversed(rows)],
    )  # fmt: skip


def _controller(services: ServicesDep) -> RolloutController:
    if services.rollouts is None:
        raise ConfigurationError("this cloud process runs no rollout controller")
    return services.rollouts


@router.post("/plan", response_model=RolloutPlanView)
def plan_rollout(session: SessionDep, body: RolloutCreate) -> RolloutPlanView:
    """The waves a rollout would get (which device in which wave, which are skipped and why); writes nothing."""
    staged = preview(session, body.deployment, body.rollout)
    return RolloutPlanView(model_id=staged.model_id, version=staged.version, targets=staged.targets,
                           waves=staged.plan.waves, skipped={k: v.value for k, v in staged.plan.skipped.items()},
                           offline=list(staged.offline))


@router.post("", response_model=RolloutView, status_code=status.HTTP_201_CREATED)
def create_rollout(
    session: SessionDep, services: ServicesDep, operator: OperatorDep, body: RolloutCreate
) -> RolloutView:
    """Start a staged rollout; its first wave opens at once."""

    def audit_row(session: Session, deployment: Deployment) -> None:
        audit.record_by(session, operator, "rollout.create", deployment.id, {
            "model_id": deployment.model_id, "version": deployment.version, "devices": len(body.deployment.device_ids),
            "labels": body.deployment.labels, "rollout": body.rollout.model_dump(),
        })  # fmt: skip

    controller = _controller(services)
    deployment = services.deployer.deploy(body.deployment, session=session, before_commit=audit_row,
                                          staged=body.rollout)  # fmt: skip
    deployment_id = deployment.id
    session.commit()  # end this session's transaction: on SQLite it holds the write lock the step needs
    controller.step(deployment_id)
    return view(session, _get(session, deployment_id), decisions=100)


@router.get("", response_model=list[RolloutView])
async def list_rollouts(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Response:
    def read(session: Session) -> list[RolloutView]:
        rows = session.exec(select(Rollout).order_by(col(Rollout.created_at_ms).desc()).limit(limit))
        return [view(session, r) for r in rows]

    return await cached_json(request, ("rollouts", limit), read, ROLLOUT_LIST)


@router.get("/{deployment_id}", response_model=RolloutView)
async def get_rollout(request: Request, deployment_id: str) -> Response:
    """From the read cache like the lists (a step of the controller shows within api_read_cache_s, an
    operator's action through the API at once)."""
    return await cached_json(request, ("rollout", deployment_id),
                             lambda s: view(s, _get(s, deployment_id), decisions=200), ROLLOUT)  # fmt: skip


@router.get("/{deployment_id}/gates", response_model=list[GateSampleView])
def gate_samples(
    session: SessionDep, deployment_id: str, limit: Annotated[int, Query(ge=1, le=5000)] = 1000
) -> list[RolloutGateSample]:
    """The gate values over time (oldest first): what the console charts."""
    _get(session, deployment_id)
    query = select(RolloutGateSample).where(RolloutGateSample.deployment_id == deployment_id)
    return list(reversed(session.exec(query.order_by(col(RolloutGateSample.id).desc()).limit(limit)).all()))


@router.post("/{deployment_id}/{action}", response_model=RolloutView)
def steer_rollout(
    session: SessionDep, services: ServicesDep, operator: OperatorDep, deployment_id: str, action: str
) -> RolloutView:
    """pause, resume, cancel or rollback (409 when the rollout's state does not allow it)."""
    if action not in ACTIONS:
        raise NotFoundError(f"no rollout action {action!r} (one of {', '.join(ACTIONS)})")
    controller = _controller(services)
    _get(session, deployment_id)
    session.commit()  # end this session's transaction: on SQLite it holds the write lock the controller needs

    def audit_row(own: Session) -> None:
        audit.record_by(own, operator, f"rollout.{action}", deployment_id)

    getattr(controller, action)(deployment_id, operator.actor, before_commit=audit_row)
    session.expire_all()
    return view(session, _get(session, deployment_id), decisions=200)


def _get(session: Session, deployment_id: str) -> Rollout:
    rollout = session.get(Rollout, deployment_id)
    if rollout is None:
        raise NotFoundError(f"no staged rollout {deployment_id}")
    return rollout
