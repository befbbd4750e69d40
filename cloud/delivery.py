"""Deployments: resolve target devices, bump their desired generation, publish retained DesiredState.

The database is written and committed first, then the messages go out, so a device never holds a desired
state the cloud has no record of (the chunk server checks entitlement against those rows). Each device's
desired state is one retained QoS 1 message on `ef/v1/dev/{id}/desired`; its `generation` increases with
every change for that device. A device that appears later (or changes labels) and matches a label
selector gets the newest matching deployment through `reconcile_device`.

Outcomes flow back through ReportedState: `record_report` moves a device's DeploymentTarget to
succeeded/failed when the report answers that target's generation, and rolls the deployment status up.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, update
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from cloud import registry
from cloud.db import is_retryable_conflict
from cloud.errors import InvalidRequestError, NotFoundError
from cloud.fleet import ensure_device, labels_match, list_devices, update_state_name
from cloud.models import Deployment, DeploymentCreate, DeploymentTarget, Device, ModelVersion
from cloud.types import ClockMs, Publisher, now_ms
from protocols import SCHEMA_VERSION
from protocols.chunking import ChunkLayout
from protocols.topics import Channel, TopicError, device_topic, validate_device_id
from protocols.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)

STRATEGIES = ("all_at_once",)
_TERMINAL = {"succeeded", "failed", "superseded"}
_DEPLOY_ATTEMPTS = 5


def artifact_location(sha256: str, size_bytes: int, chunk_size: int) -> pb.ArtifactLocation:
    return ChunkLayout.of(sha256, size_bytes, chunk_size).location()


@dataclass(frozen=True)
class Outgoing:
    """A desired state to publish once the transaction that decided it has committed."""

    device_id: str
    state: pb.DesiredState


def publish_desired(publisher: Publisher, outgoing: Iterable[Outgoing]) -> int:
    """Publish each desired state retained; returns how many went out. A failed publish is logged and
    skipped, not raised: the decision is already committed, and `Deployer.republish_all` re-sends it."""
    spec = Channel.DESIRED.spec
    sent = 0
    for item in outgoing:
        topic = device_topic(item.device_id, Channel.DESIRED)
        try:
            publisher.publish(topic, item.state.SerializeToString(), qos=spec.qos, retain=spec.retain)
        except Exception:
            log.exception("could not publish the desired state of %s", item.device_id)
            continue
        sent += 1
    return sent


def _desired_state(
    session: Session, deployment: Deployment, device_id: str, generation: int, clock: ClockMs
) -> pb.DesiredState:
    mv = registry.get_model_version_by_id(session, deployment.model_version_id)
    return pb.DesiredState(
        schema_version=SCHEMA_VERSION,
        device_id=device_id,
        deployment_id=deployment.id,
        generation=generation,
        manifest=registry.signed_manifest_of(mv),
        artifacts=[
            artifact_location(a.sha256, a.size_bytes, deployment.chunk_size_bytes)
            for a in registry.artifacts_of(session, mv.id or 0)
        ],
        issued_at_ms=clock(),
    )


def _next_generation(session: Session, device_id: str) -> int:
    statement = (
        update(Device)
        .where(col(Device.id) == device_id)
        .values(desired_generation=col(Device.desired_generation) + 1)
        .returning(col(Device.desired_generation))
    )
    return int(session.execute(statement).scalar_one())  # atomic: concurrent deploys never share a number


def _target_device(session: Session, deployment: Deployment, device_id: str, clock: ClockMs) -> Outgoing:
    """Make device_id a target of deployment: supersede its open targets, bump its generation."""
    device, _ = ensure_device(session, device_id, clock=clock)
    open_targets = session.exec(
        select(DeploymentTarget).where(
            DeploymentTarget.device_id == device_id, col(DeploymentTarget.status).not_in(_TERMINAL)
        )
    )
    touched = set()
    for old in open_targets:
        old.status, old.updated_at_ms = "superseded", clock()
        session.add(old)
        touched.add(old.deployment_id)
    generation = _next_generation(session, device_id)
    session.add(DeploymentTarget(deployment_id=deployment.id, device_id=device_id, generation=generation))
    device.deployment_id = deployment.id
    device.desired_generation = generation
    session.add(device)
    session.flush()
    for deployment_id in touched:
        refresh_status(session, deployment_id)
    return Outgoing(device_id, _desired_state(session, deployment, device_id, generation, clock))


def resolve_targets(session: Session, device_ids: Sequence[str], labels: dict[str, str]) -> list[str]:
    """Explicit ids (registered or not: a retained desired state waits for them) plus label matches."""
    for device_id in device_ids:
        try:
            validate_device_id(device_id)
        except TopicError as exc:
            raise InvalidRequestError(str(exc)) from None
    chosen = dict.fromkeys(device_ids)
    if labels:
        chosen.update(dict.fromkeys(d.id for d in list_devices(session, labels=labels)))
    return list(chosen)


def plan_deployment(
    session: Session, request: DeploymentCreate, *, chunk_size_bytes: int, clock: ClockMs = now_ms
) -> tuple[Deployment, list[Outgoing]]:
    """Write the deployment and its targets (not committed) and return the desired states to publish."""
    if request.strategy not in STRATEGIES:
        raise InvalidRequestError(f"strategy {request.strategy!r} is not supported yet (use {STRATEGIES})")
    if not request.device_ids and not request.labels:
        raise InvalidRequestError("a deployment needs device_ids, a label selector, or both")
    mv = registry.get_model_version(session, request.model_id, request.version)
    device_ids = resolve_targets(session, request.device_ids, request.labels)
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
    outgoing = [_target_device(session, deployment, device_id, clock) for device_id in device_ids]
    refresh_status(session, deployment.id)
    return deployment, outgoing


def deploy(
    session: Session,
    publisher: Publisher,
    request: DeploymentCreate,
    *,
    chunk_size_bytes: int,
    clock: ClockMs = now_ms,
) -> Deployment:
    """Roll request's model version out to its targets: commit, then publish each retained desired state.

    The plan touches device and deployment rows that ingestion updates concurrently; when PostgreSQL aborts
    it as a deadlock, it is planned again from the start (nothing was published yet)."""
    for attempt in range(1, _DEPLOY_ATTEMPTS + 1):
        try:
            deployment, outgoing = plan_deployment(session, request, chunk_size_bytes=chunk_size_bytes, clock=clock)
            session.commit()
            break
        except OperationalError as exc:
            session.rollback()
            if attempt == _DEPLOY_ATTEMPTS or not is_retryable_conflict(exc):
                raise
            log.info("deployment planning hit a conflicting transaction (%s); retrying", exc.orig)
            time.sleep(0.05 * attempt)
    publish_desired(publisher, outgoing)
    session.refresh(deployment)
    log.info(
        "deployment %s: %s v%s to %d device(s)", deployment.id, deployment.model_id, deployment.version, len(outgoing)
    )
    return deployment


def refresh_status(session: Session, deployment_id: str) -> str:
    """Roll a deployment's status up from its targets' statuses; returns the new status."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        return "unknown"
    query = select(DeploymentTarget.status).where(DeploymentTarget.deployment_id == deployment_id)
    statuses = list(session.exec(query))
    live = [s for s in statuses if s != "superseded"]
    if statuses and not live:
        status = "superseded"
    elif not live or any(s not in _TERMINAL for s in live):
        status = "in_progress"  # a label deployment with no device yet waits for one to appear
    elif all(s == "succeeded" for s in live):
        status = "succeeded"
    elif all(s == "failed" for s in live):
        status = "failed"
    else:
        status = "partial"
    if status != deployment.status:
        deployment.status = status
        session.add(deployment)
    return status


def record_report(session: Session, device_id: str, report: pb.ReportedState, *, clock: ClockMs = now_ms) -> None:
    """Advance the device's DeploymentTarget when the report answers that target's generation."""
    if not report.deployment_id:
        return
    target = session.get(DeploymentTarget, (report.deployment_id, device_id))
    if target is None or target.status == "superseded" or report.desired_generation != target.generation:
        return
    state = update_state_name(report.update_state)
    status = {"active": "succeeded", "failed": "failed"}.get(state, "in_progress" if state != "idle" else None)
    if status is None or status == target.status:
        return
    failed = status == "failed"
    target.status = status
    target.error_code = (report.last_error.code or None) if failed else None
    target.error_message = (report.last_error.message or None) if failed else None
    target.updated_at_ms = clock()
    session.add(target)
    session.flush()
    refresh_status(session, target.deployment_id)


def plan_for_new_device(session: Session, device_id: str, *, clock: ClockMs = now_ms) -> list[Outgoing]:
    """For a device that just registered or changed labels: join the newest label deployment it matches,
    unless it already has that deployment or a newer one."""
    device = session.get(Device, device_id)
    if device is None or not device.labels:
        return []
    current = session.get(Deployment, device.deployment_id) if device.deployment_id else None
    candidates = session.exec(
        select(Deployment).where(col(Deployment.status) != "superseded").order_by(col(Deployment.created_at_ms).desc())
    )
    for deployment in candidates:
        if current is not None and deployment.created_at_ms <= current.created_at_ms:
            return []
        if labels_match(deployment.labels, device.labels):
            if session.get(DeploymentTarget, (deployment.id, device_id)) is not None:
                return []
            outgoing = _target_device(session, deployment, device_id, clock)
            refresh_status(session, deployment.id)
            return [outgoing]
    return []


def plan_republish(session: Session, *, clock: ClockMs = now_ms) -> list[Outgoing]:
    """Every device's current desired state at its current generation (for a broker that lost retained
    messages, e.g. a restarted embedded broker); devices see an unchanged generation and do nothing new."""
    devices = session.exec(select(Device).where(col(Device.deployment_id).is_not(None)))
    outgoing = []
    for device in devices:
        deployment = session.get(Deployment, device.deployment_id)
        if deployment is not None:
            state = _desired_state(session, deployment, device.id, device.desired_generation, clock)
            outgoing.append(Outgoing(device.id, state))
    return outgoing


def get_deployment(session: Session, deployment_id: str) -> Deployment:
    found = session.get(Deployment, deployment_id)
    if found is None:
        raise NotFoundError(f"no deployment {deployment_id}")
    return found


def list_deployments(session: Session, *, model_id: str | None = None) -> list[Deployment]:
    query = select(Deployment).order_by(col(Deployment.created_at_ms).desc())
    if model_id is not None:
        query = query.where(Deployment.model_id == model_id)
    return list(session.exec(query))


def targets_of(session: Session, deployment_id: str) -> list[DeploymentTarget]:
    query = select(DeploymentTarget).where(DeploymentTarget.deployment_id == deployment_id)
    return list(session.exec(query.order_by(col(DeploymentTarget.device_id))))


def model_version_of(session: Session, deployment: Deployment) -> ModelVersion:
    return registry.get_model_version_by_id(session, deployment.model_version_id)


class Deployer:
    """Delivery bound to an engine and a publisher: what the API, the ingestor and the service call."""

    def __init__(self, engine: Engine, publisher: Publisher, *, chunk_size_bytes: int, clock: ClockMs = now_ms) -> None:
        self.engine = engine
        self.publisher = publisher
        self.chunk_size_bytes = chunk_size_bytes
        self.clock = clock

    def deploy(self, request: DeploymentCreate, session: Session | None = None) -> Deployment:
        if session is not None:
            return deploy(session, self.publisher, request, chunk_size_bytes=self.chunk_size_bytes, clock=self.clock)
        with Session(self.engine, expire_on_commit=False) as own:
            return deploy(own, self.publisher, request, chunk_size_bytes=self.chunk_size_bytes, clock=self.clock)

    def reconcile_device(self, device_id: str) -> int:
        """Publish a matching label deployment to a new or relabelled device; returns messages sent."""
        with Session(self.engine) as session:
            outgoing = plan_for_new_device(session, device_id, clock=self.clock)
            session.commit()
        return publish_desired(self.publisher, outgoing)

    def republish_all(self) -> int:
        with Session(self.engine) as session:
            outgoing = plan_republish(session, clock=self.clock)
        return publish_desired(self.publisher, outgoing)
