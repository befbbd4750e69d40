from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import Query, Request, Response
from pydantic import TypeAdapter
from sqlmodel import Session

from cloud import rollout
from cloud.api import paging
from cloud.api.auth import API_PREFIX, OperatorDep, api_router
from cloud.api.deps import ServicesDep, SessionDep, cached_json
from cloud.api.schemas import DeploymentDetail
from cloud.db.tables import Deployment, DeploymentCreate, DeploymentPublic, DeploymentTarget, DeploymentTargetPublic
from cloud.identity import audit

router = api_router(prefix="/deployments", tags=["deployments"])
DEPLOYMENT_LIST = TypeAdapter(list[DeploymentPublic])
TARGET_LIST = TypeAdapter(list[DeploymentTargetPublic])


DETAIL_TARGETS = 100  # targets the detail carries by default: the rest are paged (GET .../targets)


def _detail(session: Session, deployment: Deployment, target_limit: int = DETAIL_TARGETS) -> DeploymentDetail:
    """Counts per status over every target, the first `target_limit` targets and where the rest are: bounded
    queries, whatever the deployment's size (it listed every target: 10,000 devices were megabytes a poll)."""
    counts = rollout.target_counts(session, [deployment.id])[deployment.id]
    first = rollout.targets_of(session, deployment.id, limit=target_limit + 1) if target_limit else []
    page = paging.take_page(first, target_limit, lambda t: t.device_id)
    total = sum(counts.values())
    after = page.next_key if target_limit else (None if not total else "")
    return DeploymentDetail(
        **DeploymentPublic.model_validate(deployment).model_dump(),
        counts=dict(counts),
        target_count=total,
        targets=[DeploymentTargetPublic.model_validate(t) for t in page.rows],
        targets_next=None if after is None else targets_url(deployment.id, after),
        waiting=rollout.waiting_reason(session, deployment, counts),
    )


def targets_url(deployment_id: str, after: str | int) -> str:
    """The paged target list from after device `after` ("" for the first page, which needs no cursor)."""
    path = f"{API_PREFIX}/deployments/{quote(deployment_id, safe='')}/targets"
    return f"{path}?{urlencode({'cursor': paging.encode_cursor('targets', after)})}" if after else path


@router.get("", response_model=list[DeploymentPublic])
async def list_deployments(request: Request, model_id: str | None = None) -> Response:
    read = lambda s: rollout.list_deployments(s, model_id=model_id)  # noqa: E731
    return await cached_json(request, ("deployments", model_id), read, DEPLOYMENT_LIST)


@router.get("/{deployment_id}", response_model=DeploymentDetail)
def get_deployment(
    session: SessionDep,
    deployment_id: str,
    target_limit: Annotated[int, Query(ge=0, le=paging.MAX_PAGE, description="targets in the body (0: none)")]
    = DETAIL_TARGETS,
) -> DeploymentDetail:
    """The deployment, its targets counted by status, why it waits, and its first `target_limit` targets;
    `targets_next` is the URL of the rest in the paged list (None when the body holds them all)."""
    return _detail(session, rollout.get_deployment(session, deployment_id), target_limit)


@router.get("/{deployment_id}/targets", response_model=list[DeploymentTargetPublic])
async def deployment_targets(
    request: Request,
    deployment_id: str,
    limit: Annotated[int, Query(ge=1, le=paging.MAX_PAGE, description="targets per page")] = paging.DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(description="from the previous page's Link rel=next")] = None,
) -> Response:
    """A deployment's targets in device id order, a page at a time (next page in `Link`, cloud.api.paging);
    the deployment itself (`GET /deployments/{id}`) counts them and carries only the first page."""
    after = paging.decode_cursor("targets", cursor, str)

    def read(session: Session) -> paging.Page[DeploymentTarget]:
        rollout.get_deployment(session, deployment_id)  # 404 for an unknown id
        found = rollout.targets_of(session, deployment_id, after=after, limit=limit + 1)
        return paging.take_page(found, limit, lambda t: t.device_id)

    key = ("deployment-targets", deployment_id, limit, after)
    return await cached_json(request, key, read, TARGET_LIST, listing="targets")


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
