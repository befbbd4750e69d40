"""Deployment planning: resolve target devices, bump their desired generation, build each DesiredState.

Every function here writes rows without committing and returns the desired states to publish
(`Outgoing`); `cloud.rollout.deployer` commits, then publishes. Each device's desired state is one retained
QoS 1 message on `ef/v1/{fleet}/dev/{id}/desired` carrying the director's signed assignment (its counter
is the device's `generation`, which increases with every change for that device) and the fleet's trust
chain; the signed manifest too, unless the device's agent reads it by digest (`protocols.capabilities`):
then `Outgoing.manifest` holds it for `cloud.rollout.manifests` to keep retained once for the fleet.
The assignment last sent to each device is kept (`AssignmentRecord`) for the refresher.
A batch of targets is planned with the device rows locked first, in id order (as ingestion locks them);
what a concurrent deploy to the same devices committed (its targets, its records) is read after that, so
the later deploy supersedes and replaces it. Targets and records are written as plain rows, not ORM objects.
A device that appears later (or changes labels) and matches a label selector gets the newest matching
deployment through `plan_for_new_devices`; `plan_reassign` gives devices a fresh assignment (next counter,
same deployment) when theirs nears expiry, their manifest was re-signed, or the director key changed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, SQLModel, col, select

from cloud import registry
from cloud.db import DeploymentStatus, RolloutState, TargetStatus, among, insert_ignore
from cloud.db.tables import AssignmentRecord, Deployment, DeploymentCreate, DeploymentTarget, Device
from cloud.errors import InvalidRequestError
from cloud.fleet import labels_match, list_devices, read_devices
from cloud.identity.enrollment import expected_devices
from cloud.rollout.deployments import refresh_status
from cloud.rollout.director import Director
from cloud.rollout.records import Rollout
from cloud.rollout.status import TERMINAL
from cloud.types import ClockMs, now_ms
from protocols import SCHEMA_VERSION
from protocols.capabilities import CLOUD_CAPABILITIES, MANIFEST_BY_DIGEST
from protocols.chunking import ChunkLayout
from protocols.topics import TopicError, validate_device_id
from protocols.v1 import messages_pb2 as pb

STRATEGIES = ("all_at_once",)
_IN_BATCH = 500  # ids per IN (...) query: well inside every database's parameter limit


def artifact_location(sha256: str, size_bytes: int, chunk_size: int) -> pb.ArtifactLocation:
    return ChunkLayout.of(sha256, size_bytes, chunk_size).location()


@dataclass(frozen=True)
class Outgoing:
    """A desired state to publish once the transaction that decided it has committed."""

    device_id: str
    state: pb.DesiredState
    # left out of `state` (the device reads it by digest): published fleet-wide first, or put back in
    manifest: pb.SignedManifest | None = None


@dataclass(frozen=True)
class Release:
    """What every target of one deployment is sent alike: read once per plan, not once per device (a
    1,000-device deployment spent a fifth of its planning re-reading the same artifact rows)."""

    manifest: pb.SignedManifest
    artifacts: tuple[pb.ArtifactLocation, ...]

    @classmethod
    def of(cls, session: Session, deployment: Deployment) -> Release:
        mv = registry.get_model_version_by_id(session, deployment.model_version_id)
        locations = tuple(
            artifact_location(a.sha256, a.size_bytes, deployment.chunk_size_bytes)
            for a in registry.artifacts_of(session, mv.id or 0)
        )
        return cls(registry.signed_manifest_of(mv), locations)


def _desired_state(
    session: Session,
    director: Director,
    deployment: Deployment,
    device_id: str,
    generation: int,
    clock: ClockMs,
    *,
    reuse: bool = False,
    release: Release | None = None,
    capabilities: Sequence[str] = (),
) -> Outgoing:
    """The desired state of device_id at `generation`, its assignment signed and recorded; without the
    manifest (in `Outgoing.manifest` instead) when the device's `capabilities` say it reads it by digest.

    With reuse, the assignment already recorded for this very (deployment, counter, manifest, root
    version) is sent again byte for byte (a republish), rather than a new one with the same counter."""
    release = release or Release.of(session, deployment)
    record = session.get(AssignmentRecord, device_id)
    if reuse and record is not None:
        now = clock()
        assignment = director.assignment(device_id, deployment.id, generation, release.manifest, now_ms=now)
        same = (record.deployment_id, record.counter, record.manifest_sha256, record.root_version) == (
            deployment.id, generation, assignment.manifest_sha256, director.root_version)  # fmt: skip
        if same:
            signed = pb.SignedAssignment.FromString(record.signed)
            return _outgoing(director, deployment, device_id, generation, now, release, signed, capabilities)
    outgoing, fields = _signed(director, deployment, device_id, generation, clock, release, capabilities)
    if record is None:
        record = AssignmentRecord(device_id=device_id, **fields)
    else:
        record.sqlmodel_update(fields)
    session.add(record)
    return outgoing


def _signed(
    director: Director, deployment: Deployment, device_id: str, generation: int, clock: ClockMs, release: Release,
    capabilities: Sequence[str],
) -> tuple[Outgoing, dict[str, Any]]:  # fmt: skip
    """A freshly signed desired state of device_id, and its AssignmentRecord's columns (device_id aside)."""
    now = clock()
    assignment = director.assignment(device_id, deployment.id, generation, release.manifest, now_ms=now)
    signed = director.sign(assignment)
    fields = {
        "deployment_id": deployment.id, "counter": generation, "manifest_sha256": assignment.manifest_sha256,
        "root_version": director.root_version, "issued_at_ms": assignment.issued_at_ms,
        "expires_at_ms": assignment.expires_at_ms, "signed": signed.SerializeToString(),
    }  # fmt: skip
    return _outgoing(director, deployment, device_id, generation, now, release, signed, capabilities), fields


def _outgoing(
    director: Director, deployment: Deployment, device_id: str, generation: int, now: int, release: Release,
    signed: pb.SignedAssignment, capabilities: Sequence[str],
) -> Outgoing:  # fmt: skip
    by_digest = MANIFEST_BY_DIGEST in capabilities
    state = pb.DesiredState(
        schema_version=SCHEMA_VERSION,
        device_id=device_id,
        deployment_id=deployment.id,
        generation=generation,
        manifest=None if by_digest else release.manifest,
        artifacts=list(release.artifacts),
        issued_at_ms=now,
        assignment=signed,
        trust=director.trust,
        cloud_capabilities=CLOUD_CAPABILITIES,  # what this cloud reads from the device (protocols.capabilities)
    )
    return Outgoing(device_id, state, release.manifest if by_digest else None)


def _recorded(session: Session, device_ids: Sequence[str]) -> set[str]:
    """Those of device_ids that have an assignment record, in a few queries rather than one per device."""
    found: set[str] = set()
    for start in range(0, len(device_ids), _IN_BATCH):
        batch = list(device_ids[start : start + _IN_BATCH])
        found.update(session.exec(select(AssignmentRecord.device_id).where(
            among(session, col(AssignmentRecord.device_id), batch))))  # fmt: skip
    return found


def _target_all(
    session: Session, director: Director, deployment: Deployment, device_ids: Sequence[str], clock: ClockMs
) -> list[Outgoing]:
    """Make device_ids targets of deployment, the statements run once per batch of ids rather than per device:
    open targets superseded, generations bumped, targets and assignment records written, and each
    superseded deployment's status rolled up once (per device, a redeploy to 1,000 devices rolled each
    superseded deployment up 1,000 times). The new targets and records are written as plain rows, not ORM
    objects: building, tracking and flushing an object per row was half of deploy()'s planning CPU."""
    release = Release.of(session, deployment)
    capabilities = _ensure_devices(session, device_ids, clock)
    generations = _next_generations(session, device_ids, deployment.id)
    # read with the device rows locked (PostgreSQL): what a concurrent deploy to them committed is seen, its
    # target superseded and its record replaced (read before, a second deploy inserted the record again and
    # failed, and left the first one's target open)
    touched = _supersede_open_targets(session, device_ids, clock)
    recorded = _recorded(session, device_ids)
    now = clock()
    outgoing, targets, records = [], [], []
    for device_id in device_ids:
        generation = generations[device_id]
        targets.append({"deployment_id": deployment.id, "device_id": device_id, "generation": generation,
                        "updated_at_ms": now})  # fmt: skip
        sent, fields = _signed(director, deployment, device_id, generation, clock, release, capabilities[device_id])
        outgoing.append(sent)
        records.append({"device_id": device_id, **fields})
    session.flush()  # the superseded targets, before the new ones
    _keep_loaded_rows_current(session, Device, {d: {"deployment_id": deployment.id, "desired_generation": g}
                                                for d, g in generations.items()})  # fmt: skip
    if insert_ignore(session, DeploymentTarget, targets, ["deployment_id", "device_id"]) != len(targets):
        raise AssertionError(f"a device was already a target of {deployment.id}")  # callers leave those out
    _write_records(session, [r for r in records if r["device_id"] in recorded],
                   [r for r in records if r["device_id"] not in recorded])  # fmt: skip
    for deployment_id in sorted(touched - {deployment.id}):
        refresh_status(session, deployment_id)
    return outgoing


def _write_records(session: Session, existing: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    """The devices' assignment records replaced (one executemany UPDATE, in id order as every writer locks rows)
    or inserted; the ORM objects of them this session holds told the same."""
    if existing:
        existing.sort(key=lambda row: row["device_id"])
        table = AssignmentRecord.__table__  # type: ignore[attr-defined]
        columns = [name for name in existing[0] if name != "device_id"]
        statement = update(table).where(table.c.device_id == bindparam("key_device_id"))
        statement = statement.values({name: bindparam(f"new_{name}") for name in columns})
        session.execute(statement, [{"key_device_id": row["device_id"], **{f"new_{n}": row[n] for n in columns}}
                                    for row in existing])  # fmt: skip
    if insert_ignore(session, AssignmentRecord, new, ["device_id"]) != len(new):
        raise AssertionError("an assignment record appeared while the device rows were locked")
    written = {row["device_id"]: {k: v for k, v in row.items() if k != "device_id"} for row in existing}
    _keep_loaded_rows_current(session, AssignmentRecord, written)


def _keep_loaded_rows_current(session: Session, model: type[SQLModel], changes: dict[str, dict[str, Any]]) -> None:
    """Rows this session had loaded before a Core statement wrote them: told the written values, not marked
    changed (a caller that read a device before deploying sees what the database now holds)."""
    if not session.identity_map:
        return
    for key, values in changes.items():
        loaded = session.identity_map.get(identity_key(model, key))
        if loaded is not None:
            for name, value in values.items():
                set_committed_value(loaded, name, value)


def _supersede_open_targets(session: Session, device_ids: Sequence[str], clock: ClockMs) -> set[str]:
    """Mark the devices' unfinished targets superseded; returns the deployments they belonged to."""
    touched: set[str] = set()
    now = clock()
    for start in range(0, len(device_ids), _IN_BATCH):
        batch = list(device_ids[start : start + _IN_BATCH])
        query = select(DeploymentTarget).where(
            among(session, col(DeploymentTarget.device_id), batch), col(DeploymentTarget.status).not_in(TERMINAL)
        )
        for old in session.exec(query):
            old.status, old.updated_at_ms = TargetStatus.SUPERSEDED, now
            session.add(old)
            touched.add(old.deployment_id)
    return touched


def _lock_devices(session: Session, sorted_ids: Sequence[str]) -> None:
    """Lock the device rows for this transaction in id order, as ingestion's flush does: transactions that
    lock the same rows so never deadlock (SQLite: a no-op, its writers take turns)."""
    for start in range(0, len(sorted_ids), _IN_BATCH):
        batch = list(sorted_ids[start : start + _IN_BATCH])
        ordered = select(col(Device.id)).where(among(session, col(Device.id), batch)).order_by(col(Device.id))
        session.execute(ordered.with_for_update())


def _next_generations(session: Session, device_ids: Sequence[str], deployment_id: str) -> dict[str, int]:
    """`_next_generation` for many devices, each now desired in deployment_id: one UPDATE ... RETURNING per
    batch, each row still bumped atomically (concurrent deploys never share a number)."""
    generations: dict[str, int] = {}
    ordered = sorted(device_ids)
    for start in range(0, len(ordered), _IN_BATCH):
        batch = ordered[start : start + _IN_BATCH]
        _lock_devices(session, batch)  # first, in id order (an UPDATE ... IN locks them in scan order)
        statement = (
            update(Device)
            .where(among(session, col(Device.id), batch))
            .values(desired_generation=col(Device.desired_generation) + 1, deployment_id=deployment_id)
            .returning(col(Device.id), col(Device.desired_generation))
            .execution_options(synchronize_session=False)  # the caller sets the loaded rows (see below)
        )
        generations.update((device_id, int(generation)) for device_id, generation in session.execute(statement))
    missing = set(device_ids) - generations.keys()
    if missing:  # _ensure_devices created every row in this transaction: only a bug gets here
        raise AssertionError(f"no device row for {sorted(missing)[:5]}")
    return generations


def _ensure_devices(session: Session, device_ids: Sequence[str], clock: ClockMs) -> dict[str, list[str]]:
    """`ensure_device` for many: the rows created where missing, one insert and one select per batch rather
    than both per device; returns each device's capabilities (all the plan needs of its row)."""
    capabilities: dict[str, list[str]] = {}
    for start in range(0, len(device_ids), _IN_BATCH):
        batch = list(device_ids[start : start + _IN_BATCH])
        for device_id in batch:
            validate_device_id(device_id)
        now = clock()
        insert_ignore(session, Device, [{"id": d, "registered_at_ms": now} for d in batch], ["id"])
        query = select(col(Device.id), col(Device.capabilities)).where(among(session, col(Device.id), batch))
        capabilities.update((device_id, found or []) for device_id, found in session.exec(query))
    return capabilities


def _next_generation(session: Session, device_id: str) -> int:
    statement = (
        update(Device)
        .where(col(Device.id) == device_id)
        .values(desired_generation=col(Device.desired_generation) + 1)
        .returning(col(Device.desired_generation))
        # every caller sets the loaded row's desired_generation itself; the ORM's default ("evaluate") would
        # test every object in the session against the WHERE clause: O(n^2) over a deployment's targets,
        # 25 s of a 40 s deploy() to 1,000 devices
        .execution_options(synchronize_session=False)
    )
    return int(session.execute(statement).scalar_one())  # atomic: concurrent deploys never share a number


def resolve_targets(session: Session, device_ids: Sequence[str], labels: dict[str, str]) -> list[str]:
    """Explicit ids plus label matches. An explicit id must be enrolled, or named by an enrollment token
    not yet spent (its retained desired state then waits for it): a typo or a made-up id is refused rather
    than becoming a device row that nothing will ever answer for."""
    for device_id in device_ids:
        try:
            validate_device_id(device_id)
        except TopicError as exc:
            raise InvalidRequestError(str(exc)) from None
    unknown = sorted(set(device_ids) - expected_devices(session, device_ids))
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise InvalidRequestError(
            f"not enrolled: {', '.join(unknown[:10])}{more} (enroll first: edgefleet devices enroll --device-id ...)"
        )
    chosen = dict.fromkeys(device_ids)
    if labels:
        chosen.update(dict.fromkeys(d.id for d in list_devices(session, labels=labels)))
    return list(chosen)


def plan_deployment(
    session: Session,
    request: DeploymentCreate,
    *,
    director: Director,
    chunk_size_bytes: int,
    clock: ClockMs = now_ms,
) -> tuple[Deployment, list[Outgoing]]:
    """Write the deployment and its targets (not committed) and return the desired states to publish.

    Any registered version may be deployed, an older one included: a rollback is an ordinary deployment
    whose assignments carry each device's next counter."""
    if request.strategy not in STRATEGIES:
        raise InvalidRequestError(f"strategy {request.strategy!r} is not supported yet (use {STRATEGIES})")
    if not request.device_ids and not request.labels:
        raise InvalidRequestError("a deployment needs device_ids, a label selector, or both")
    mv = registry.get_model_version(session, request.model_id, request.version)
    device_ids = resolve_targets(session, request.device_ids, request.labels)
    if not device_ids and not request.wait_for_devices:  # a selector alone that matches nothing: a typo?
        selector = ",".join(f"{k}={v}" for k, v in sorted(request.labels.items()))
        raise InvalidRequestError(f"no device matches the labels {selector} (see: edgefleet devices; "
                                  "to wait for devices that join later: --wait-for-devices)")
    deployment = Deployment(
        id=uuid.uuid4().hex[:16],
        model_version_id=mv.id or 0,
        model_id=mv.model_id,
        version=mv.version,
        device_ids=list(request.device_ids),
        labels=dict(request.labels),
        strategy=request.strategy,
        chunk_size_bytes=chunk_size_bytes,
        created_at_ms=clock(),
    )
    session.add(deployment)
    session.flush()
    outgoing = _target_all(session, director, deployment, device_ids, clock)
    refresh_status(session, deployment.id)
    return deployment, outgoing


def open_label_deployments(session: Session) -> list[Deployment]:
    """The deployments a device that appears or changes labels may join, newest first: those with a label
    selector, not ended, and not a staged rollout still running (its waves were fixed when it started; it is
    joined once it completes). Most fleets have none, and then nobody needs reconciling."""
    ended = (DeploymentStatus.SUPERSEDED, DeploymentStatus.ROLLED_BACK, DeploymentStatus.CANCELLED)
    query = (
        select(Deployment).where(col(Deployment.status).not_in(ended)).order_by(col(Deployment.created_at_ms).desc())
    )
    labelled = [deployment for deployment in session.exec(query) if deployment.labels]
    if not labelled:
        return []
    staged = session.exec(select(Rollout).where(col(Rollout.deployment_id).in_([d.id for d in labelled])))
    running = {r.deployment_id for r in staged if not RolloutState(r.state).finished}
    return [deployment for deployment in labelled if deployment.id not in running]


def plan_for_new_devices(
    session: Session, device_ids: Sequence[str], *, director: Director, clock: ClockMs = now_ms
) -> list[Outgoing]:
    """For devices that just registered or changed labels: each joins the newest label deployment it
    matches, unless it already has that deployment or a newer one. A query per batch of ids, not per device
    (10,000 first reports, each reconciled in a transaction of its own, kept a SQLite cloud settling for 20
    minutes), and one query in all when no label deployment is open."""
    candidates = open_label_deployments(session)
    ids = sorted(set(device_ids))
    if not candidates or not ids:
        return []
    # two cloud processes that both take in a device's first report: the second waits here for the first
    # to commit, then sees its target below (rows locked in id order, as ingestion and deploy lock them)
    _lock_devices(session, ids)
    devices = [device for device in read_devices(session, ids).values() if device.labels]
    current = {d.id: d.created_at_ms for d in _read_deployments(session, {d.deployment_id for d in devices})}
    joining: dict[str, list[str]] = {}
    for device in sorted(devices, key=lambda device: device.id):
        newer_than = current.get(device.deployment_id or "")
        for deployment in candidates:
            if newer_than is not None and deployment.created_at_ms <= newer_than:
                break
            if labels_match(deployment.labels, device.labels):
                joining.setdefault(deployment.id, []).append(device.id)
                break
    outgoing = []
    by_id = {deployment.id: deployment for deployment in candidates}
    for deployment_id, joiners in sorted(joining.items()):
        has = _targeted(session, deployment_id, joiners)
        if joiners := [device_id for device_id in joiners if device_id not in has]:
            outgoing += _target_all(session, director, by_id[deployment_id], joiners, clock)
            refresh_status(session, deployment_id)
    return outgoing


def _read_deployments(session: Session, deployment_ids: set[str | None]) -> list[Deployment]:
    ids = sorted(d for d in deployment_ids if d)
    found: list[Deployment] = []
    for start in range(0, len(ids), _IN_BATCH):
        batch = ids[start : start + _IN_BATCH]
        found += session.exec(select(Deployment).where(among(session, col(Deployment.id), batch)))
    return found


def _targeted(session: Session, deployment_id: str, device_ids: Sequence[str]) -> set[str]:
    """Those of device_ids that already are targets of the deployment."""
    found: set[str] = set()
    for start in range(0, len(device_ids), _IN_BATCH):
        query = select(DeploymentTarget.device_id).where(
            DeploymentTarget.deployment_id == deployment_id,
            among(session, col(DeploymentTarget.device_id), device_ids[start : start + _IN_BATCH]),
        )
        found.update(session.exec(query))
    return found


def plan_republish(session: Session, *, director: Director, clock: ClockMs = now_ms) -> list[Outgoing]:
    """Every device's current desired state at its current counter (for a broker that lost retained
    messages, e.g. a restarted embedded broker): the recorded assignment is sent again where it is still
    the current one, so devices see a counter they already hold and do nothing new."""
    devices = session.exec(select(Device).where(col(Device.deployment_id).is_not(None)))
    outgoing = []
    for device in devices:
        deployment = session.get(Deployment, device.deployment_id)
        if deployment is not None:
            outgoing.append(_desired_state(session, director, deployment, device.id, device.desired_generation,
                                           clock, reuse=True, capabilities=device.capabilities))  # fmt: skip
    return outgoing


def plan_reassign(
    session: Session, device_ids: Sequence[str], *, director: Director, clock: ClockMs = now_ms
) -> list[Outgoing]:
    """A fresh assignment (next counter, same deployment, the manifest as now stored) for each device that
    has a deployment. The target keeps its status: the release did not change, only its signatures."""
    outgoing = []
    for device_id in device_ids:
        device = session.get(Device, device_id)
        deployment = session.get(Deployment, device.deployment_id) if device and device.deployment_id else None
        if device is None or deployment is None:
            continue
        generation = _next_generation(session, device_id)
        target = session.get(DeploymentTarget, (deployment.id, device_id))
        if target is not None and target.status != TargetStatus.SUPERSEDED:
            # reports name the counter they answer: follow it, or the device's next report is ignored
            target.generation = generation
            session.add(target)
        device.desired_generation = generation  # keep the loaded row in step with the UPDATE above
        session.add(device)
        outgoing.append(_desired_state(session, director, deployment, device_id, generation, clock,
                                       capabilities=device.capabilities))  # fmt: skip
    session.flush()
    return outgoing


def target_devices(
    session: Session, director: Director, deployment: Deployment, device_ids: Sequence[str], clock: ClockMs = now_ms
) -> list[Outgoing]:
    """Make each of device_ids a target of deployment now (a staged rollout opening a wave)."""
    outgoing = _target_all(session, director, deployment, device_ids, clock)
    refresh_status(session, deployment.id)
    return outgoing
