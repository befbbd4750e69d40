"""Verification primitives: the half of signing that a device runs (pure; no I/O).

Trust chain (TUF's idea of roles, Uptane's split of them): versioned root metadata (`protocols.roots`),
pinned on every device at provisioning and advanced only with the old root key's consent, names one key
per role: *root* (signs the next root version), *targets* (signs each Manifest) and *director* (signs
each per-device Assignment, `protocols.assignment`). A device acts on a manifest only when the director
assigned it to that device and a targets key of its root signed it; the artifact bytes it then downloads
must match the manifest's size and digest. This module holds what those checks share: key ids,
signature checks, the artifact check, and the errors. (An older scheme, a root key's delegation attached
to each manifest, is gone; `SignedManifest.delegations` stays on the wire, deprecated and unwritten.)

Errors (all subclasses of VerificationError, each with a stable `code` that agents report):
    VerificationError
    ├── MalformedManifestError      code "malformed"          bytes that do not parse
    ├── UnknownKeyError             code "unknown_key"        signer holds no such role in the root
    ├── BadSignatureError           code "bad_signature"      a signature that does not verify
    ├── ExpiredError                code "expired"            manifest, assignment or role key past its expiry
    ├── RevokedKeyError             code "revoked"            a key a root version revoked
    ├── WrongFleetError             code "wrong_fleet"        metadata of another fleet
    ├── WrongDeviceError            code "wrong_device"       an assignment addressed to another device
    ├── ReplayError                 code "replay"             an assignment counter not above the last
    ├── NotAssignedError            code "not_assigned"       a manifest the assignment does not name
    ├── TooLargeError               code "too_large"          a command over its size bounds (protocols.commands)
    ├── DigestMismatchError         code "digest_mismatch"    artifact bytes differ from the manifest
    └── SizeMismatchError           code "size_mismatch"      artifact length differs from the manifest
"""

from __future__ import annotations

import hashlib

from protocols.codes import ErrorCode
from protocols.v1 import messages_pb2 as pb


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


class TooLargeError(VerificationError):
    code = ErrorCode.TOO_LARGE


class DigestMismatchError(VerificationError):
    code = ErrorCode.DIGEST_MISMATCH


class SizeMismatchError(VerificationError):
    code = ErrorCode.SIZE_MISMATCH


def check_addressed(kind: str, message: pb.Assignment | pb.Command, fleet: str, device_id: str,
                    last_counter: int) -> None:  # fmt: skip
    """A director's per-device message (an assignment, a command) must name this fleet and this device and
    have a counter above the last one this device accepted of its kind; else raise the refusal."""
    if message.fleet != fleet:
        raise WrongFleetError(f"{kind} for fleet {message.fleet!r}, this device is in {fleet!r}")
    if message.device_id != device_id:
        raise WrongDeviceError(f"{kind} for device {message.device_id!r}, this is {device_id!r}")
    if message.counter <= last_counter:
        raise ReplayError(f"{kind} counter {message.counter} is not above {last_counter}")


def key_id(public_key_raw: bytes) -> str:
    """Short stable id of an Ed25519 public key: the first 16 hex chars of its sha256."""
    return hashlib.sha256(public_key_raw).hexdigest()[:16]


def verify_signature(public_key_raw: bytes, signature: bytes, data: bytes) -> bool:
    """True when `signature` is public_key_raw's Ed25519 signature over data (never raises)."""
    # here, not at the top: cryptography costs a device ~10 MB resident, and most imports of this module only
    # want the error classes
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key_raw).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_artifact(artifact: pb.Artifact, data: bytes) -> None:
    """Check downloaded bytes against the manifest's size and sha256 (size first: it is cheaper)."""
    if len(data) != artifact.size_bytes:
        raise SizeMismatchError(
            f"artifact {artifact.name}: {len(data)} bytes, manifest says {artifact.size_bytes}"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != artifact.sha256:
        raise DigestMismatchError(f"artifact {artifact.name}: sha256 {digest}, manifest says {artifact.sha256}")
