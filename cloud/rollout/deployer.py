"""The Deployer: rollout decisions committed, then published; the one way the API, ingestion and the
service roll models out.

The database is written and committed first, then the messages go out, so a device never holds a desired
state the cloud has no record of (the chunk server checks entitlement against those rows). A publish
that fails after the commit is logged, not raised; `republish_all` sends every current desired state again.
Assignments are signed by the Deployer's `director`, which the refresher replaces after a key rotation;
everything goes to the director's fleet's topics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from cloud.db import is_retryable_conflict, read_only
from cloud.db.tables import Deployment, DeploymentCreate
from cloud.rollout.director import Director
from cloud.rollout.fanout import FanoutPublisher
from cloud.rollout.manifests import ManifestPublisher
from cloud.rollout.plan import (
    Outgoing,
    open_label_deployments,
    plan_deployment,
    plan_for_new_devices,
    plan_reassign,
    plan_republish,
)
from cloud.rollout.policy import RolloutPolicy
from cloud.rollout.staged import plan_staged
from cloud.types import ClockMs, Publisher, now_ms
from protocols.assignment import manifest_digest
from protocols.topics import Channel, device_topic, trust_topic
from protocols.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)

_DEPLOY_ATTEMPTS = 5

BeforeCommit = Callable[[Session, Deployment], object]
T = TypeVar("T")
Plan = Callable[[Session], tuple[T, list[Outgoing]]]  # writes its rows, returns (result, desired states to send)


def publish_desired(
    publisher: Publisher, outgoing: Iterable[Outgoing], *, fleet: str, fanout: FanoutPublisher | None = None,
    again: bool = False, manifests: ManifestPublisher | None = None,
) -> int:  # fmt: skip
    """Publish each desired state retained; returns how many went out. A failed publish is logged and
    skipped, not raised: the decision is already committed, and `Deployer.republish_all` re-sends it.
    With fanout, the artifacts' chunks are made retained on the fleet-wide topics first (once per artifact,
    whatever the number of devices: `cloud.rollout.fanout`) and each desired state names them. With
    manifests, a manifest left out of desired states is made retained on its fleet-wide topic first (once
    per manifest: `cloud.rollout.manifests`); without, or where that fails, it is put back in."""
    outgoing = list(outgoing)
    if fanout is not None and outgoing:
        try:
            fanout.offer([loc for item in outgoing for loc in item.state.artifacts], again=again)
        except Exception:  # devices then ask for every chunk on their own topics, as without fan-out
            log.exception("could not offer the artifacts on the fleet-wide topics")
    unpublished = _unpublished_manifests(outgoing, manifests, again=again)
    spec = Channel.DESIRED.spec
    sent = 0
    for item in outgoing:
        if item.manifest is not None and id(item.manifest) in unpublished:
            item.state.manifest.CopyFrom(item.manifest)  # the device then finds it in its desired state
        topic = device_topic(item.device_id, Channel.DESIRED, fleet=fleet)
        try:
            publisher.publish(topic, item.state.SerializeToString(), qos=spec.qos, retain=spec.retain)
        except Exception:
            log.exception("could not publish the desired state of %s", item.device_id)
            continue
        sent += 1
    return sent


def _unpublished_manifests(
    outgoing: list[Outgoing], manifests: ManifestPublisher | None, *, again: bool
) -> set[int]:  # fmt: skip
    """Offer the manifests left out of desired states (one per release, shared by its devices' Outgoing);
    returns the ids of those that are not retained fleet-wide, so must go inside the desired states."""
    left_out = {id(item.manifest): item.manifest for item in outgoing if item.manifest is not None}
    if not left_out:
        return set()
    retained = manifests.offer(left_out.values(), again=again) if manifests is not None else set()
    return {key for key, signed in left_out.items() if manifest_digest(signed) not in retained}


class Deployer:
    """Rollout bound to an engine and a publisher: what the API, the ingestor and the service call."""

    def __init__(
        self,
        engine: Engine,
        publisher: Publisher,
        *,
        director: Director,
        chunk_size_bytes: int,
        clock: ClockMs = now_ms,
        fanout: FanoutPublisher | None = None,
        manifests: ManifestPublisher | None = None,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.fanout = fanout  # None: every device asks for every chunk on its own topics
        self.manifests = manifests  # None: every desired state carries its manifest
        self.director = director  # replaced whole (one reference assignment) when the keys change
        self.chunk_size_bytes = chunk_size_bytes
        self.clock = clock

    @property
    def fleet(self) -> str:
        return self.director.fleet

    def publish(self, outgoing: Iterable[Outgoing], *, fleet: str | None = None, again: bool = False) -> int:
        """Publish committed desired states (`publish_desired` with this deployer's publisher and fan-outs)."""
        return publish_desired(self.publisher, outgoing, fleet=fleet or self.fleet, fanout=self.fanout, again=again,
                               manifests=self.manifests)  # fmt: skip

    def publish_trust(self, trust: pb.TrustChain | None = None) -> None:
        """Keep the fleet's trust chain retained on its trust topic, where every device reads rotations."""
        chain = trust if trust is not None else self.director.trust
        self.publisher.publish(trust_topic(self.fleet), chain.SerializeToString(), qos=1, retain=True)

    def deploy(
        self, request: DeploymentCreate, session: Session | None = None, *, before_commit: BeforeCommit | None = None,
        staged: RolloutPolicy | None = None,
    ) -> Deployment:  # fmt: skip
        """Roll request's model version out to its targets: commit, then publish each retained desired state.
        Runs in `session` when given (the API's request session), else in a session of its own.
        `before_commit(session, deployment)` writes in the same transaction (the API's audit row), so the
        deployment and its record commit together or not at all; it runs again if planning is retried.
        With `staged`, only the plan is committed (a `Rollout`): the rollout controller opens its waves."""
        if session is not None:
            return self._deploy(session, request, before_commit, staged)
        with Session(self.engine, expire_on_commit=False) as own:
            return self._deploy(own, request, before_commit, staged)

    def _deploy(
        self, session: Session, request: DeploymentCreate, before_commit: BeforeCommit | None,
        staged: RolloutPolicy | None,
    ) -> Deployment:  # fmt: skip
        director = self.director

        def plan(session: Session) -> tuple[Deployment, list[Outgoing]]:
            if staged is None:
                deployment, outgoing = plan_deployment(
                    session, request, director=director, chunk_size_bytes=self.chunk_size_bytes, clock=self.clock
                )
            else:
                deployment, _ = plan_staged(session, request, staged, chunk_size_bytes=self.chunk_size_bytes,
                                            clock=self.clock)  # fmt: skip
                outgoing = []
            if before_commit is not None:
                before_commit(session, deployment)
            return deployment, outgoing

        deployment, outgoing = self._commit_with_retries(session, plan)
        self.publish(outgoing, fleet=director.fleet)
        session.refresh(deployment)
        log.info(
            "deployment %s: %s v%s to %d device(s)",
            deployment.id, deployment.model_id, deployment.version, len(outgoing),
        )
        return deployment

    def commit_plan(self, plan: Plan[T]) -> T:
        """Run `plan(session)` in a session of its own, commit, then publish the desired states it returns;
        for callers that plan several deployments in one transaction (experiments)."""
        with Session(self.engine, expire_on_commit=False) as session:
            result, outgoing = self._commit_with_retries(session, plan)
        self.publish(outgoing)
        return result

    def _commit_with_retries(self, session: Session, plan: Plan[T]) -> tuple[T, list[Outgoing]]:
        # A plan touches device and deployment rows that ingestion updates concurrently; when PostgreSQL
        # aborts it as a deadlock, it is planned again from the start (nothing was published yet).
        for attempt in range(1, _DEPLOY_ATTEMPTS + 1):
            try:
                planned = plan(session)
                session.commit()
                return planned
            except OperationalError as exc:
                session.rollback()
                if attempt == _DEPLOY_ATTEMPTS or not is_retryable_conflict(exc):
                    raise
                log.info("deployment planning hit a conflicting transaction (%s); retrying", exc.orig)
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def reconcile_device(self, device_id: str) -> int:
        """`reconcile_devices` for one device (a device just enrolled)."""
        return self.reconcile_devices([device_id])

    def reconcile_devices(self, device_ids: Iterable[str]) -> int:
        """Publish to new or relabelled devices the label deployments they match, planned in one transaction;
        returns messages sent. Whether any label deployment is open is read first without the write lock
        (SQLite): most fleets have none, and an ingestion batch of first reports then costs one query."""
        ids = list(dict.fromkeys(device_ids))
        if not ids:
            return 0
        with Session(read_only(self.engine)) as session:
            if not open_label_deployments(session):
                return 0
        director = self.director

        def plan(session: Session) -> tuple[None, list[Outgoing]]:
            return None, plan_for_new_devices(session, ids, director=director, clock=self.clock)

        with Session(self.engine) as session:
            _, outgoing = self._commit_with_retries(session, plan)
        return self.publish(outgoing, fleet=director.fleet)

    def republish_all(self) -> int:
        """The trust chain and every current desired state again (a broker that lost retained messages)."""
        director = self.director
        self.publish_trust(director.trust)
        with Session(self.engine) as session:
            outgoing = plan_republish(session, director=director, clock=self.clock)
            session.commit()  # assignments re-signed for a changed key are recorded
        return self.publish(outgoing, fleet=director.fleet, again=True)

    def reassign(self, device_ids: list[str]) -> int:
        """Fresh assignments (next counter, same release) for device_ids: committed, then published."""
        if not device_ids:
            return 0
        director = self.director
        with Session(self.engine) as session:
            outgoing = plan_reassign(session, device_ids, director=director, clock=self.clock)
            session.commit()
        return self.publish(outgoing, fleet=director.fleet)
