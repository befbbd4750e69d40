"""Manifest verification: the half of signing that a device runs (pure; no I/O).

Trust chain (TUF's idea of roles, reduced to two): an offline *root* key, pinned on every device at
provisioning, signs a KeyDelegation naming an online *targets* key and its expiry; the targets key signs
each Manifest. A device accepts a manifest only when every link holds.

Errors (all subclasses of VerificationError, each with a stable `code` that agents report):
    VerificationError
    ├── MalformedManifestError      code "malformed"          bytes that do not parse
    ├── UnknownKeyError             code "unknown_key"        signer not delegated by the pinned root
    ├── BadSignatureError           code "bad_signature"      a signature that does not verify
    ├── ExpiredError                code "expired"            manifest or delegation past its expiry
    ├── RollbackError               code "rollback"           sequence not above the installed one
    ├── RevokedKeyError             code "revoked"            a key a root version revoked
    ├── WrongFleetError             code "wrong_fleet"        metadata of another fleet
    ├── WrongDeviceError            code "wrong_device"       an assignment addressed to another device
    ├── ReplayError                 code "replay"             an assignment counter not above the last
    ├── NotAssignedError            code "not_assigned"       a manifest the assignment does not name
    ├── DigestMismatchError         code "digest_mismatch"    artifact bytes differ from the manifest
    └── SizeMismatchError           code "size_mismatch"      artifact length differs from the manifest
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from protocols.codes import ErrorCode
from protocols.v1 import messages_pb2 as pb

TARGETS_ROLE = "targets"


class VerificationError(Exception):
    code = ErrorCode.VERIFICATION_FAILED


class MalformedManifestError(VerificationError):
    code = ErrorCode.MALFORMED


class UnknownKeyError(VerificationError):
    code = ErrorCode.UNKNOWN_KEY


class BadSignatureError(VerificationError):
    code = ErrorCode.BAD_SIGNATURE


class ExpiredError(VerificationError):
    code = ErrorCode.EXPIRED


class RollbackError(VerificationError):
    code = ErrorCode.ROLLBACK


class RevokedKeyError(VerificationError):
    code = ErrorCode.REVOKED


class WrongFleetError(VerificationError):
    code = ErrorCode.WRONG_FLEET


class WrongDeviceError(VerificationError):
    code = ErrorCode.WRONG_DEVICE


class ReplayError(VerificationError):
    code = ErrorCode.REPLAY


class NotAssignedError(VerificationError):
    code = ErrorCode.NOT_ASSIGNED


class DigestMismatchError(VerificationError):
    code = ErrorCode.DIGEST_MISMATCH


class SizeMismatchError(VerificationError):
    code = ErrorCode.SIZE_MISMATCH


def key_id(public_key_raw: bytes) -> str:
    """Short stable id of an Ed25519 public key: the first 16 hex chars of its sha256."""
    return hashlib.sha256(public_key_raw).hexdigest()[:16]


def verify_signature(public_key_raw: bytes, signature: bytes, data: bytes) -> bool:
    """True when `signature` is public_key_raw's Ed25519 signature over data (never raises)."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key_raw).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class TrustedRoot:
    """The root public keys a device pins (more than one while a root key is being rotated)."""

    public_keys: tuple[bytes, ...]

    @classmethod
    def of(cls, *keys: bytes) -> TrustedRoot:
        return cls(tuple(keys))

    def by_id(self) -> dict[str, bytes]:
        return {key_id(k): k for k in self.public_keys}


@dataclass
class Delegations:
    valid: dict[str, pb.KeyDelegation]
    expired: set[str]


def delegated_keys(
    delegations: Iterable[pb.SignedDelegation], root: TrustedRoot, now_ms: int
) -> Delegations:
    """The targets keys that a pinned root key has delegated to, split into valid and expired at now_ms.

    A delegation that is forged or signed by an unknown root is left out (not an error by itself: the
    manifest's own key id decides whether anything was missing)."""
    roots = root.by_id()
    valid: dict[str, pb.KeyDelegation] = {}
    expired: set[str] = set()
    for signed in delegations:
        root_key = roots.get(signed.root_key_id)
        if root_key is None or not verify_signature(root_key, signed.root_signature, signed.delegation):
            continue
        delegation = pb.KeyDelegation()
        try:
            delegation.ParseFromString(signed.delegation)
        except DecodeError:
            continue
        if delegation.role != TARGETS_ROLE or key_id(delegation.public_key) != delegation.key_id:
            continue
        if delegation.not_after_ms and delegation.not_after_ms <= now_ms:
            expired.add(delegation.key_id)
            continue
        valid[delegation.key_id] = delegation
    return Delegations(valid, expired)


def verify_manifest(
    signed: pb.SignedManifest,
    root: TrustedRoot,
    *,
    now_ms: int,
    installed_sequence: int | None = None,
) -> pb.Manifest:
    """Check the signature chain, expiry and sequence of a signed manifest; return the Manifest.

    installed_sequence is the sequence of the model of the same model_id now installed (None if none):
    a manifest must carry a strictly higher one, so an old signed manifest cannot be replayed.
    """
    keys = delegated_keys(signed.delegations, root, now_ms)
    delegation = keys.valid.get(signed.key_id)
    if delegation is None:
        if signed.key_id in keys.expired:
            raise ExpiredError(f"the delegation of signing key {signed.key_id} has expired")
        raise UnknownKeyError(f"signing key {signed.key_id or '(none)'} is not delegated by a trusted root key")
    if not verify_signature(delegation.public_key, signed.signature, signed.manifest):
        raise BadSignatureError(f"manifest signature by key {signed.key_id} does not verify")
    manifest = pb.Manifest()
    try:
        manifest.ParseFromString(signed.manifest)
    except DecodeError as exc:
        raise MalformedManifestError(f"signed manifest bytes do not parse: {exc}") from None
    if manifest.expires_at_ms and manifest.expires_at_ms <= now_ms:
        raise ExpiredError(
            f"manifest {manifest.model_id} v{manifest.version} expired at {manifest.expires_at_ms} ms"
        )
    if installed_sequence is not None and manifest.sequence <= installed_sequence:
        raise RollbackError(
            f"manifest sequence {manifest.sequence} is not above the installed {installed_sequence}"
        )
    return manifest


def verify_artifact(artifact: pb.Artifact, data: bytes) -> None:
    """Check downloaded bytes against the manifest's size and sha256 (size first: it is cheaper)."""
    if len(data) != artifact.size_bytes:
        raise SizeMismatchError(
            f"artifact {artifact.name}: {len(data)} bytes, manifest says {artifact.size_bytes}"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != artifact.sha256:
        raise DigestMismatchError(f"artifact {artifact.name}: sha256 {digest}, manifest says {artifact.sha256}")
