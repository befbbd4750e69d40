"""The refresher: keeps every live signed statement fresh, on a thread of the service.

Each `tick` does, in this order (the decisions are `cloud.rollout.freshness`, pure):
  1. keys: when the key store's chain has a newer root version than the deployer's director (a `keys
     rotate` or `keys revoke` ran while the service was up), load the new director and publish the trust
     chain retained on the fleet's trust topic;
  2. manifests of live model versions (ones some device is assigned) that near expiry, or whose targets
     key is no longer current, are re-signed and stored in place;
  3. devices whose assignment nears expiry, names a re-signed manifest, or was signed under an older root
     get a new assignment (next counter, same release), published retained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from cloud import registry
from cloud.db.tables import AssignmentRecord, Deployment, Device, ModelVersion
from cloud.periodic import Periodic
from cloud.registry.keys import KeyStore
from cloud.rollout.deployer import Deployer
from cloud.rollout.director import Director
from cloud.rollout.freshness import AssignmentFacts, FreshnessPolicy, ManifestFacts, assignments_due, manifests_due
from protocols.assignment import manifest_digest
from protocols.roots import TARGETS_ROLE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshReport:
    trust_published: bool = False
    manifests_resigned: int = 0
    devices_reassigned: int = 0


class Refresher(Periodic):
    """`start()` runs `tick` on a thread every interval_s, at once first: a cloud that was down may come
    back with statements already near expiry."""

    name = "edgefleet-refresher"

    def __init__(self, deployer: Deployer, keys: KeyStore, policy: FreshnessPolicy, *, interval_s: float) -> None:
        self.deployer = deployer
        self.keys = keys
        self.policy = policy
        self.interval_s = interval_s

    def tick(self) -> RefreshReport:
        trust_published = self._follow_keys()
        resigned = self._resign_manifests()
        return RefreshReport(trust_published, resigned, self._reassign())

    def _follow_keys(self) -> bool:
        if not follow_keys(self.deployer, self.keys):
            return False
        self.deployer.publish_trust()
        log.info("root version %d published to fleet %s", self.deployer.director.root_version, self.deployer.fleet)
        return True

    def _live(self, session: Session) -> list[tuple[Device, ModelVersion]]:
        query = (
            select(Device, ModelVersion)
            .join(Deployment, col(Deployment.id) == col(Device.deployment_id))
            .join(ModelVersion, col(ModelVersion.id) == col(Deployment.model_version_id))
        )
        return list(session.exec(query).all())

    def _resign_manifests(self) -> int:
        now = self.deployer.clock()
        targets = {k.key_id for k in self.keys.latest().keys if k.role == TARGETS_ROLE}
        with Session(self.deployer.engine) as session:
            versions = {mv.id: mv for _device, mv in self._live(session)}
            facts = [
                ManifestFacts(mv.id or 0, mv.signing_key_id, registry.manifest_of(mv).expires_at_ms)
                for mv in versions.values()
            ]
            due = manifests_due(facts, now_ms=now, policy=self.policy, targets_key_ids=targets)
            if not due:
                return 0
            signer = self.keys.manifest_signer()
            for model_version_id in due:
                registry.resign_manifest(
                    session, versions[model_version_id], signer, expires_at_ms=now + self.policy.manifest_valid_ms
                )
            session.commit()
        log.info("re-signed %d manifest(s)", len(due))
        return len(due)

    def _reassign(self) -> int:
        director = self.deployer.director
        # every live device with its assignment's facts in one query, and each release's digest once: per
        # device reads made a tick of a 1,000-device fleet cost seconds (every minute, rollouts or not)
        query = (
            select_columns(
                col(Device.id), ModelVersion, col(AssignmentRecord.manifest_sha256),
                col(AssignmentRecord.expires_at_ms), col(AssignmentRecord.root_version),
                col(AssignmentRecord.device_id),
            )  # fmt: skip
            .join(Deployment, col(Deployment.id) == col(Device.deployment_id))
            .join(ModelVersion, col(ModelVersion.id) == col(Deployment.model_version_id))
            .outerjoin(AssignmentRecord, col(AssignmentRecord.device_id) == col(Device.id))
        )
        digests: dict[int | None, str] = {}
        facts = []
        with Session(self.deployer.engine) as session:
            for device_id, mv, manifest_sha256, expires_at_ms, root_version, assigned in session.execute(query):
                current = digests.get(mv.id)
                if current is None:
                    current = digests[mv.id] = manifest_digest(registry.signed_manifest_of(mv))
                if assigned is None:
                    facts.append(AssignmentFacts(device_id, current, None))
                else:
                    facts.append(AssignmentFacts(device_id, current, manifest_sha256, expires_at_ms, root_version))
        due = assignments_due(
            facts, now_ms=self.deployer.clock(), policy=self.policy, root_version=director.root_version
        )
        sent = self.deployer.reassign(due)
        if due:
            log.info("re-assigned %d device(s), %d published", len(due), sent)
        return len(due)


def follow_keys(deployer: Deployer, keys: KeyStore) -> bool:
    """Give deployer the director of the key store's newest root version; False when it has it already."""
    if keys.latest().version == deployer.director.root_version:
        return False
    valid_s = deployer.director.assignment_valid_ms // 1000
    deployer.director = Director.from_keys(keys, assignment_valid_s=valid_s)
    return True


class KeyFollower(Periodic):
    """A console API process's deployer follows key rotations as the core's refresher does (which publishes
    the new trust chain: the API process only signs with the new keys)."""

    name = "edgefleet-key-follower"

    def __init__(self, deployer: Deployer, keys: KeyStore, *, interval_s: float) -> None:
        self.deployer, self.keys, self.interval_s = deployer, keys, interval_s

    def tick(self) -> bool:
        return follow_keys(self.deployer, self.keys)
