"""Deployment rows after planning: reading them, and moving their status along as devices report.

`record_report` advances a device's DeploymentTarget when a ReportedState answers that target's
generation; `refresh_status` then rolls the deployment's status up with the pure rules of
`cloud.rollout.status`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import func
from sqlmodel import Session, col, select

from cloud import registry
from cloud.db import DeploymentStatus, RolloutState, TargetStatus, among, fetch_or_raise
from cloud.db.tables import Deployment, DeploymentTarget, Device, ModelVersion
from cloud.fleet import update_state_name
from cloud.rollout.records import Rollout
from cloud.rollout.status import roll_up, rollout_status, target_status_for
from cloud.types import ClockMs, now_ms
from protocols.v1 import messages_pb2 as pb


def refresh_status(session: Session, deployment_id: str) -> str:
    """Roll a deployment's status up from its targets' statuses; returns the new status. A staged rollout
    stays in progress until its controller finishes it, and then says how it ended (`rollout_status`)."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        return "unknown"
    # the rules depend only on which statuses occur, not how often: the database answers with a handful of
    # rows rather than one per target (ingestion rolls a 10,000-device deployment up after each batch)
    query = select(DeploymentTarget.status).where(DeploymentTarget.deployment_id == deployment_id).distinct()
    staged = session.get(Rollout, deployment_id)
    status = rollout_status(RolloutState(staged.state), session.exec(query)) if staged else roll_up(session.exec(query))
    if status != deployment.status:
        deployment.status = status
        session.add(deployment)
    return status


_IN_BATCH = 500  # ids per IN (...) list


def read_targets(session: Session, reports: Iterable[tuple[str, str]]) -> dict[tuple[str, str], DeploymentTarget]:
    """The DeploymentTargets that (deployment id, device id) pairs name, read fresh, a query per deployment
    and 500 devices: ingestion reads a batch's targets at once rather than one query per report."""
    by_deployment: dict[str, list[str]] = {}
    for deployment_id, device_id in dict.fromkeys(reports):
        if deployment_id:
            by_deployment.setdefault(deployment_id, []).append(device_id)
    found: dict[tuple[str, str], DeploymentTarget] = {}
    for deployment_id, ids in by_deployment.items():
        for start in range(0, len(ids), _IN_BATCH):
            query = select(DeploymentTarget).where(
                DeploymentTarget.deployment_id == deployment_id,
                among(session, col(DeploymentTarget.device_id), ids[start : start + _IN_BATCH]),
            )
            for target in session.exec(query.execution_options(populate_existing=True)):
                found[(target.deployment_id, target.device_id)] = target
    return found


def record_report(
    session: Session, device_id: str, report: pb.ReportedState, *, clock: ClockMs = now_ms, refresh: bool = True,
    targets: Mapping[tuple[str, str], DeploymentTarget] | None = None,
) -> str | None:  # fmt: skip
    """Advance the device's DeploymentTarget when the report answers that target's generation; returns the
    id of the deployment whose target moved (None if none did). refresh=False leaves rolling that
    deployment's status up to the caller (ingestion does it once per batch, not once per report).
    targets: the rows `read_targets` read for the batch this report is in (none there: no target)."""
    if not report.deployment_id:
        return None
    key = (report.deployment_id, device_id)
    target = targets.get(key) if targets is not None else session.get(DeploymentTarget, key)
    if target is None or target.status == TargetStatus.SUPERSEDED or report.desired_generation != target.generation:
        return None
    status = target_status_for(update_state_name(report.update_state))
    if status is None or status == target.status:
        return None
    failed = status == TargetStatus.FAILED
    target.status = status
    previous = report.previous_model
    if status == TargetStatus.SUCCEEDED and previous.model_id and previous.version:
        target.previous_model = f"{previous.model_id}@{previous.version}"  # the device's word, not our guess
    target.error_code = (report.last_error.code or None) if failed else None
    target.error_message = (report.last_error.message or None) if failed else None
    target.updated_at_ms = clock()
    session.add(target)
    if refresh:
        session.flush()
        refresh_status(session, target.deployment_id)
    return target.deployment_id


def get_deployment(session: Session, deployment_id: str) -> Deployment:
    return fetch_or_raise(session, Deployment, deployment_id, missing=f"no deployment {deployment_id}")


def list_deployments(session: Session, *, model_id: str | None = None) -> list[Deployment]:
    query = select(Deployment).order_by(col(Deployment.created_at_ms).desc())
    if model_id is not None:
        query = query.where(Deployment.model_id == model_id)
    return list(session.exec(query))


def targets_of(session: Session, deployment_id: str, *, after: str | None = None,
               limit: int | None = None) -> list[DeploymentTarget]:  # fmt: skip
    """A deployment's targets in device id order; with `after` only those after that device, at most `limit`."""
    query = select(DeploymentTarget).where(DeploymentTarget.deployment_id == deployment_id)
    if after is not None:
        query = query.where(col(DeploymentTarget.device_id) > after)
    return list(session.exec(query.order_by(col(DeploymentTarget.device_id)).limit(limit)))


def model_version_of(session: Session, deployment: Deployment) -> ModelVersion:
    return registry.get_model_version_by_id(session, deployment.model_version_id)


def target_counts(session: Session, deployment_ids: Sequence[str]) -> dict[str, Counter[str]]:
    """Each deployment's targets counted by status, in one grouped query (a handful of rows per deployment
    whatever its size: the API's detail and the console's pages show counts, not 10,000 rows)."""
    counts: dict[str, Counter[str]] = {d: Counter() for d in deployment_ids}
    if not deployment_ids:
        return counts
    grouped = (select(DeploymentTarget.deployment_id, DeploymentTarget.status, func.count())
               .where(col(DeploymentTarget.deployment_id).in_(list(deployment_ids)))
               .group_by(DeploymentTarget.deployment_id, DeploymentTarget.status))  # fmt: skip
    for deployment_id, status, n in session.exec(grouped):
        counts[deployment_id][status] = n
    return counts


WAITING_NAMED = 5  # device ids a waiting reason names per kind (offline, online)


def waiting_reason(session: Session, deployment: Deployment, counts: Mapping[str, int]) -> str | None:
    """Why an unfinished deployment has not finished, in one line: no target yet, or which devices have not
    answered and whether they are offline (None once it has finished). `counts`: its targets per status
    (`target_counts`); bounded queries: the open targets are counted, and only a few are named."""
    if deployment.status != DeploymentStatus.IN_PROGRESS:
        return None
    staged = session.get(Rollout, deployment.id)
    if staged is not None and staged.reason:
        return f"staged rollout {staged.state}: {staged.reason}"
    if not sum(counts.values()):
        return f"no device matches {deployment.labels} yet: it reaches devices that enroll with those labels"
    is_online = func.coalesce(Device.online, False)  # a target whose device row is gone counts as offline
    waiting = (TargetStatus.PENDING, TargetStatus.IN_PROGRESS)
    open_targets = (select(DeploymentTarget.device_id)
                    .join(Device, col(Device.id) == DeploymentTarget.device_id, isouter=True)
                    .where(DeploymentTarget.deployment_id == deployment.id)
                    .where(col(DeploymentTarget.status).in_(waiting)))  # fmt: skip
    parts, total = [], 0
    for online, words in ((False, "offline ({}): their desired state waits for them, retained"),
                          (True, "online still updating or silent ({})")):  # fmt: skip
        chosen = open_targets.where(is_online == online)
        n = session.exec(select(func.count()).select_from(chosen.subquery())).one()
        if not n:
            continue
        total += n
        named = list(session.exec(chosen.order_by(col(DeploymentTarget.device_id)).limit(WAITING_NAMED)))
        some = ", ".join(named) + (f" and {n - len(named)} more" if n > len(named) else "")
        parts.append(f"{n} " + words.format(some))
    return f"waiting for {total} device(s): " + "; ".join(parts)
