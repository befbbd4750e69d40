"""Per-device assignments: the director's signed word that one device should run one manifest (pure).

The manifest says *what* a release is (signed by a targets key); the assignment says *who* runs it and
*in which order* (signed by a director key, Uptane's split). A device acts on a desired state only when:

    the assignment verifies under a director key of its root      unknown_key / revoked / bad_signature
    it names this fleet and this device                           wrong_fleet / wrong_device
    its counter is above the last one this device accepted        replay
    it has not expired (checked before installing only)           expired
    the manifest's bytes hash to the digest it names              not_assigned
    the manifest verifies under a targets key of the root         unknown_key / revoked / bad_signature / expired

Since order comes from the counter, a lower manifest sequence is fine: an operator's rollback to an
earlier release is an ordinary new assignment, while an attacker's replay of an old one is a lower counter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from protocols import trust
from protocols.roots import DIRECTOR_ROLE, TARGETS_ROLE, RootOfTrust
from protocols.v1 import messages_pb2 as pb


def manifest_digest(signed: pb.SignedManifest) -> str:
    """What an assignment names: the sha256 of the manifest bytes exactly as signed."""
    return hashlib.sha256(signed.manifest).hexdigest()


def verify_assignment(
    signed: pb.SignedAssignment,
    root: RootOfTrust,
    *,
    device_id: str,
    last_counter: int,
    now_ms: int,
) -> pb.Assignment:
    """The Assignment if it is for this device, newer than the last accepted and unexpired; else raise."""
    root.verify(DIRECTOR_ROLE, signed.key_id, signed.signature, signed.assignment, now_ms)
    assignment = pb.Assignment()
    try:
        assignment.ParseFromString(signed.assignment)
    except DecodeError as exc:
        raise trust.MalformedManifestError(f"assignment does not parse: {exc}") from None
    trust.check_addressed("assignment", assignment, root.fleet, device_id, last_counter)
    if assignment.expires_at_ms and assignment.expires_at_ms <= now_ms:
        raise trust.ExpiredError(f"assignment {assignment.counter} expired at {assignment.expires_at_ms} ms")
    return assignment


def verify_assigned_manifest(
    signed: pb.SignedManifest, assignment: pb.Assignment, root: RootOfTrust, *, now_ms: int
) -> pb.Manifest:
    """The Manifest if it is the one the assignment names and a targets key of the root signed it."""
    if manifest_digest(signed) != assignment.manifest_sha256:
        raise trust.NotAssignedError(
            f"manifest {manifest_digest(signed)[:12]} is not the one assigned "
            f"({assignment.manifest_sha256[:12] or 'none'})"
        )
    root.verify(TARGETS_ROLE, signed.key_id, signed.signature, signed.manifest, now_ms)
    manifest = pb.Manifest()
    try:
        manifest.ParseFromString(signed.manifest)
    except DecodeError as exc:
        raise trust.MalformedManifestError(f"signed manifest bytes do not parse: {exc}") from None
    if manifest.expires_at_ms and manifest.expires_at_ms <= now_ms:
        raise trust.ExpiredError(
            f"manifest {manifest.model_id} v{manifest.version} expired at {manifest.expires_at_ms} ms"
        )
    return manifest


@dataclass(frozen=True)
class VerifiedDesired:
    """What a device may act on: the assignment, the manifest it names (None: no model assigned), and
    the root version both verified under (newer than the device's when the desired state carried one)."""

    assignment: pb.Assignment
    manifest: pb.Manifest | None
    root: RootOfTrust


def verify_desired(
    desired: pb.DesiredState, root: RootOfTrust, *, device_id: str, last_counter: int, now_ms: int
) -> VerifiedDesired:
    """Check a whole desired state; nothing in it is trusted unless this returns. Pure: the caller
    persists the new counter and root only after it returns, so a refused message changes no state."""
    if not desired.HasField("assignment"):
        raise trust.MalformedManifestError("desired state without a signed assignment")
    newer_root = root.advance(desired.trust.roots) if desired.HasField("trust") else root
    assignment = verify_assignment(
        desired.assignment, newer_root, device_id=device_id, last_counter=last_counter, now_ms=now_ms
    )
    if not assignment.manifest_sha256:
        return VerifiedDesired(assignment, None, newer_root)
    if not desired.HasField("manifest"):
        raise trust.NotAssignedError(f"assignment {assignment.counter} names a manifest the desired state lacks")
    manifest = verify_assigned_manifest(desired.manifest, assignment, newer_root, now_ms=now_ms)
    return VerifiedDesired(assignment, manifest, newer_root)
