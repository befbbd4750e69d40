"""Deployment rows after planning: reading them, and moving their status along as devices report.

`record_report` advances a device's DeploymentTarget when a ReportedState answers that target's
generation, on the plain values `read_targets` read, and `write_targets` writes a batch's changes in one
executemany per set of columns (ORM objects and their flush were a fifth of ingestion's CPU in a 1,000-device
rollout); `refresh_status` then rolls the deployment's status up with the pure rules of `cloud.rollout.status`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import groupby
from typing import Any

from sqlalchemy import bindparam, func, update
from sqlalchemy import select as select_rows
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, col, select

from cloud import registry
from cloud.db import DeploymentStatus, RolloutState, TargetStatus, among, fetch_or_raise
from cloud.db.tables import Deployment, DeploymentTarget, Device, ModelVersion
from cloud.fleet import update_state_name
from cloud.rollout.records import Rollout
from cloud.rollout.status import TERMINAL, roll_up, rollout_status, target_status_for
from cloud.types import ClockMs, now_ms
from protocols.v1 import messages_pb2 as pb


def refresh_status(session: Session, deployment_id: str) -> str:
    """Roll a deployment's status up from its targets' statuses; returns the new status. A staged rollout
    stays in progress until its controller finishes it, and then says how it ended (`rollout_status`)."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        return "unknown"
    statuses = _deciding_statuses(session, deployment_id)
    staged = session.get(Rollout, deployment_id)
    status = rollout_status(RolloutState(staged.state), statuses) if staged else roll_up(statuses)
    if status != deployment.status:
        deployment.status = status
        session.add(deployment)
    return status


def _deciding_statuses(session: Session, deployment_id: str) -> list[str]:
    """Statuses of the deployment's targets that decide its roll-up. The rules depend only on which statuses
    occur, not how often; and while one target is unfinished the roll-up is "in progress" whatever the others
    say, so that one alone is read first, a probe that stops at the first it finds. Only when none is left
    are the distinct statuses read, a handful of rows but a scan of every target: ingestion rolls a deployment
    up after each batch, and at 10,000 devices that scan per batch was most of the roll-up's work."""
    targets = select(DeploymentTarget.status).where(DeploymentTarget.deployment_id == deployment_id)
    unfinished = session.exec(targets.where(col(DeploymentTarget.status).not_in(TERMINAL)).limit(1)).first()
    if unfinished is not None:
        return [unfinished]
    return list(session.exec(targets.distinct()))


_IN_BATCH = 500  # ids per IN (...) list


_TARGET_TABLE = DeploymentTarget.__table__  # type: ignore[attr-defined]
TargetKey = tuple[str, str]  # (deployment id, device id)


def read_targets(session: Session, reports: Iterable[TargetKey]) -> dict[TargetKey, dict[str, Any]]:
    """The DeploymentTargets that (deployment id, device id) pairs name, as plain values (what a report is
    judged by: generation and status), a query per deployment and 500 devices: ingestion reads a batch's
    targets at once rather than one query per report, and no ORM object per target."""
    by_deployment: dict[str, list[str]] = {}
    for deployment_id, device_id in dict.fromkeys(reports):
        if deployment_id:
            by_deployment.setdefault(deployment_id, []).append(device_id)
    table = _TARGET_TABLE
    found: dict[TargetKey, dict[str, Any]] = {}
    for deployment_id, ids in by_deployment.items():
        for start in range(0, len(ids), _IN_BATCH):
            batch = ids[start : start + _IN_BATCH]
            query = select_rows(table.c.deployment_id, table.c.device_id, table.c.generation, table.c.status).where(
                table.c.deployment_id == deployment_id, among(session, table.c.device_id, batch)
            )
            found.update(((row.deployment_id, row.device_id), dict(row._mapping)) for row in session.execute(query))
    return found


def record_report(
    device_id: str, report: pb.ReportedState, targets: Mapping[TargetKey, dict[str, Any]], *, clock: ClockMs = now_ms
) -> tuple[TargetKey, dict[str, Any]] | None:
    """The change to the device's DeploymentTarget when the report answers that target's generation: its key
    and the columns to write (`write_targets`), or None when it does not move. `targets`: the rows
    `read_targets` read for the batch this report is in (none there: no target); the row is changed in
    place, so the device's next report in the batch is judged against it."""
    if not report.deployment_id:
        return None
    key = (report.deployment_id, device_id)
    target = targets.get(key)
    if target is None or target["status"] == TargetStatus.SUPERSEDED:
        return None
    if report.desired_generation != target["generation"]:  # a report about an older counter
        return None
    status = target_status_for(update_state_name(report.update_state))
    if status is None or status == target["status"]:
        return None
    failed = status == TargetStatus.FAILED
    changes: dict[str, Any] = {"status": status}
    previous = report.previous_model
    if status == TargetStatus.SUCCEEDED and previous.model_id and previous.version:
        changes["previous_model"] = f"{previous.model_id}@{previous.version}"  # the device's word, not our guess
    changes["error_code"] = (report.last_error.code or None) if failed else None
    changes["error_message"] = (report.last_error.message or None) if failed else None
    changes["updated_at_ms"] = clock()
    target.update(changes)
    return key, changes


def write_targets(session: Session, changes: Mapping[TargetKey, Mapping[str, Any]]) -> None:
    """UPDATE each target's changed columns in key order (the order the ORM's flush locked them in, so
    ingestion workers still lock rows in one global order), the targets that change the same columns in one
    executemany; the ORM objects of them this session holds are told the written values."""
    table = _TARGET_TABLE
    ordered = sorted((key, values) for key, values in changes.items() if values)
    for columns, group in groupby(ordered, key=lambda item: tuple(sorted(item[1]))):
        statement = update(table).where(table.c.deployment_id == bindparam("key_deployment_id"),
                                        table.c.device_id == bindparam("key_device_id"))  # fmt: skip
        statement = statement.values({column: bindparam(f"new_{column}") for column in columns})
        rows = [{"key_deployment_id": key[0], "key_device_id": key[1], **{f"new_{c}": values[c] for c in columns}}
                for key, values in group]  # fmt: skip
        session.execute(statement, rows)
    if session.identity_map:
        for key, values in changes.items():
            loaded = session.identity_map.get(identity_key(DeploymentTarget, key))
            for name, value in values.items() if loaded is not None else ():
                set_committed_value(loaded, name, value)


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
