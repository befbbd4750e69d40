from __future__ import annotations

from collections import Counter

from sqlmodel import Session

from cloud import rollout
from cloud.api.auth import OperatorDep, api_router
from cloud.api.deps import ServicesDep, SessionDep
from cloud.api.schemas import DeploymentDetail
from cloud.db.tables import Deployment, DeploymentCreate, DeploymentPublic, DeploymentTargetPublic
from cloud.identity import audit

router = api_router(prefix="/deployments", tags=["deployments"])


def _detail(session: Session, deployment: Deployment) -> DeploymentDetail:
    targets = rollout.targets_of(session, deployment.id)
    return DeploymentDetail(
        **DeploymentPublic.model_validate(deployment).model_dump(),
        targets=[DeploymentTargetPublic.model_validate(t) for t in targets],
        counts=dict(Counter(t.status for t in targets)),
        waiting=rollout.waiting_reason(session, deployment, targets),
    )


@router.get("", response_model=list[DeploymentPublic])
def list_deployments(session: SessionDep, model_id: str | None = None) -> list[Deployment]:
    return rollout.list_deployments(session, model_id=model_id)


@router.get("/{deployment_id}", response_model=DeploymentDetail)
def get_deployment(session: SessionDep, deployment_id: str) -> DeploymentDetail:
    return _detail(session, rollout.get_deployment(session, deployment_id))


@router.post("", response_model=DeploymentDetail, status_code=201)
def create_deployment(
    session: SessionDep, services: ServicesDep, operator: OperatorDep, body: DeploymentCreate
) -> DeploymentDetail:
    """Deploy a model version (default: the latest) to explicit devices and/or every device matching labels
    (deployer or admin). The audit row commits with the deployment."""

    def audit_row(session: Session, deployment: Deployment) -> None:
        detail = {"model_id": deployment.model_id, "version": deployment.version,
                  "devices": len(body.device_ids), "labels": body.labels}
        audit.record_by(session, operator, "deployment.create", deployment.id, detail)

    deployment = services.deployer.deploy(body, session=session, before_commit=audit_row)
    return _detail(session, deployment)
