"""The pure half of signing: keys held in memory, statements signed, no files (protocols.roots,
protocols.assignment and protocols.trust check them).

Every key is named by versioned root metadata (protocols.roots), one role each: *root* signs root
versions, *targets* signs Manifests, *director* signs per-device Assignments. The cloud keeps its keys on
disk (`cloud` key store) and signs through these functions; the agent's tests and the benchmarks make
signed fake releases with them, so neither needs any cloud code.

    role_key / first_root / next_root   a root version: which keys hold which role (and which are revoked)
    sign_root                           a root version signed by root keys (old and new on a rotation)
    Signer(targets_key)                 signs Manifests with a targets key
    sign_assignment                     the director's per-device assignment (protocols.assignment)
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import SCHEMA_VERSION
from protocols.trust import key_id
from protocols.v1 import messages_pb2 as pb


def raw_public(private: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte Ed25519 public key (what devices pin and what key ids are computed from)."""
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass
class Signer:
    """Signs manifests with a targets key (one that root metadata names in the targets role)."""

    targets_key: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_id(raw_public(self.targets_key))

    def sign(self, manifest: pb.Manifest) -> pb.SignedManifest:
        body = manifest.SerializeToString(deterministic=True)
        return pb.SignedManifest(
            schema_version=SCHEMA_VERSION,
            manifest=body,
            key_id=self.key_id,
            signature=self.targets_key.sign(body),
        )


def role_key(public: bytes, role: str, *, not_after_ms: int = 0) -> pb.RoleKey:
    return pb.RoleKey(key_id=key_id(public), public_key=public, role=role, not_after_ms=not_after_ms)


def sign_root(metadata: pb.RootMetadata, *root_keys: Ed25519PrivateKey) -> pb.SignedRootMetadata:
    """Root metadata signed by each of root_keys (a rotation: the old version's root key and the new one)."""
    body = metadata.SerializeToString(deterministic=True)
    return pb.SignedRootMetadata(
        root=body,
        signatures=[pb.KeySignature(key_id=key_id(raw_public(k)), signature=k.sign(body)) for k in root_keys],
    )


def sign_assignment(director_key: Ed25519PrivateKey, assignment: pb.Assignment) -> pb.SignedAssignment:
    body = assignment.SerializeToString(deterministic=True)
    return pb.SignedAssignment(
        assignment=body, key_id=key_id(raw_public(director_key)), signature=director_key.sign(body)
    )


def first_root(fleet: str, keys: list[pb.RoleKey], *, now_ms: int) -> pb.RootMetadata:
    """Version 1 of a fleet's root metadata (sign it with its own root key; devices pin it)."""
    return pb.RootMetadata(fleet=fleet, version=1, issued_at_ms=now_ms, keys=keys)


def next_root(
    current: pb.RootMetadata,
    *,
    now_ms: int,
    add: list[pb.RoleKey] | tuple[pb.RoleKey, ...] = (),
    remove_key_ids: frozenset[str] | set[str] = frozenset(),
    revoke_key_ids: frozenset[str] | set[str] = frozenset(),
) -> pb.RootMetadata:
    """The version after `current`: keys added, removed (retired) or revoked (retired and refused by id).

    Sign it with a root key of `current` and one of its own (`sign_root(next, old_root, new_root)`)."""
    dropped = set(remove_key_ids) | set(revoke_key_ids)
    kept = [k for k in current.keys if k.key_id not in dropped]
    revoked = sorted(set(current.revoked_key_ids) | set(revoke_key_ids))
    return pb.RootMetadata(
        fleet=current.fleet,
        version=current.version + 1,
        issued_at_ms=now_ms,
        keys=[*kept, *add],
        revoked_key_ids=revoked,
    )
