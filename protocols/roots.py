"""The root of trust a device holds: versioned root metadata naming which keys may sign what (pure).

A device pins one `SignedRootMetadata` at provisioning (trust on first use: it must be signed by one of
its own root keys). From then on it accepts version N+1 only when a root key of version N *and* a root key
of version N+1 signed it, one version at a time: a stolen online key cannot name new keys, and a root
rotation needs the old root's consent. Keys carry a role ("root", "targets" for manifests, "director"
for per-device assignments) and an optional expiry; a version may revoke a key id outright.

Refusals raise the `protocols.trust` errors (each with its wire code): unknown_key, revoked, expired,
bad_signature, wrong_fleet, malformed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from protocols import SCHEMA_VERSION, trust
from protocols.v1 import messages_pb2 as pb

ROOT_ROLE = "root"
TARGETS_ROLE = "targets"
DIRECTOR_ROLE = "director"
ROLES = (ROOT_ROLE, TARGETS_ROLE, DIRECTOR_ROLE)


def parse_root(signed: pb.SignedRootMetadata) -> pb.RootMetadata:
    metadata = pb.RootMetadata()
    try:
        metadata.ParseFromString(signed.root)
    except DecodeError as exc:
        raise trust.MalformedManifestError(f"root metadata does not parse: {exc}") from None
    if metadata.version < 1:
        raise trust.MalformedManifestError("root metadata without a version")
    for key in metadata.keys:
        if key.role not in ROLES or len(key.public_key) != 32 or trust.key_id(key.public_key) != key.key_id:
            raise trust.MalformedManifestError(f"root v{metadata.version}: bad key entry {key.key_id!r}")
    return metadata


def _signed_by_one_of(signed: pb.SignedRootMetadata, root_keys: dict[str, bytes]) -> bool:
    return any(
        s.key_id in root_keys and trust.verify_signature(root_keys[s.key_id], s.signature, signed.root)
        for s in signed.signatures
    )


def _root_keys(metadata: pb.RootMetadata) -> dict[str, bytes]:
    revoked = set(metadata.revoked_key_ids)
    return {k.key_id: k.public_key for k in metadata.keys if k.role == ROOT_ROLE and k.key_id not in revoked}


@dataclass(frozen=True)
class RootOfTrust:
    """One verified root version. Immutable: `advance` returns a new one, so a refused chain changes nothing."""

    signed: pb.SignedRootMetadata
    metadata: pb.RootMetadata
    history: tuple[pb.SignedRootMetadata, ...] = ()  # every version from the pinned one to this one

    def chain(self) -> pb.TrustChain:
        """The versions that lead here from the pin: what a device keeps to re-check its root at start."""
        return pb.TrustChain(schema_version=SCHEMA_VERSION, roots=self.history or (self.signed,))

    @classmethod
    def pin(cls, signed: pb.SignedRootMetadata, *, fleet: str | None = None, _check: bool = True) -> RootOfTrust:
        """The root a device is provisioned with: it must be signed by one of its own root keys."""
        metadata = parse_root(signed)
        if fleet is not None and metadata.fleet != fleet:
            raise trust.WrongFleetError(f"root metadata is for fleet {metadata.fleet!r}, not {fleet!r}")
        if _check and not _signed_by_one_of(signed, _root_keys(metadata)):
            raise trust.BadSignatureError(f"root v{metadata.version} is not signed by one of its own root keys")
        return cls(signed, metadata, (signed,))

    @classmethod
    def from_chain(
        cls, chain: pb.TrustChain, *, fleet: str | None = None, already_verified: bool = False
    ) -> RootOfTrust:
        """Pin the chain's first version, then follow the rest (what provisioning does with trust.chain).

        already_verified: these exact bytes passed this check before (a device's memo of its pinned file,
        keyed by their digest); the same walk, without checking the signatures again."""
        if not chain.roots:
            raise trust.MalformedManifestError("an empty trust chain")
        check = not already_verified
        return cls.pin(chain.roots[0], fleet=fleet, _check=check).advance(chain.roots, _check=check)

    @classmethod
    def from_bytes(cls, data: bytes, *, fleet: str | None = None) -> RootOfTrust:
        signed = pb.SignedRootMetadata()
        try:
            signed.ParseFromString(data)
        except DecodeError as exc:
            raise trust.MalformedManifestError(f"pinned root does not parse: {exc}") from None
        return cls.pin(signed, fleet=fleet)

    @property
    def version(self) -> int:
        return int(self.metadata.version)

    @property
    def fleet(self) -> str:
        return self.metadata.fleet

    def key(self, key_id: str, role: str, now_ms: int) -> bytes:
        """The public key `key_id` if it holds `role` now; else the refusal, with its code."""
        if key_id in self.metadata.revoked_key_ids:
            raise trust.RevokedKeyError(f"key {key_id} was revoked (root v{self.version})")
        for key in self.metadata.keys:
            if key.key_id == key_id and key.role == role:
                if key.not_after_ms and key.not_after_ms <= now_ms:
                    raise trust.ExpiredError(f"{role} key {key_id} expired at {key.not_after_ms} ms")
                return bytes(key.public_key)
        raise trust.UnknownKeyError(f"key {key_id or '(none)'} holds no {role} role in root v{self.version}")

    def verify(self, role: str, key_id: str, signature: bytes, body: bytes, now_ms: int) -> None:
        """Raise unless `signature` over `body` is by a key holding `role` now."""
        public = self.key(key_id, role, now_ms)
        if not trust.verify_signature(public, signature, body):
            raise trust.BadSignatureError(f"signature by {role} key {key_id} does not verify")

    def advance(self, chain: Iterable[pb.SignedRootMetadata], *, _check: bool = True) -> RootOfTrust:
        """Follow newer versions in `chain` one at a time; return the newest reached (self if none).

        Versions at or below ours are skipped (a replayed chain changes nothing); a gap stops the walk; a
        version that is not signed by both the current and its own root keys is refused with its code."""
        by_version: dict[int, pb.SignedRootMetadata] = {}
        for signed in chain:
            version = parse_root(signed).version
            if version > self.version:
                by_version.setdefault(version, signed)
        current = self
        while current.version + 1 in by_version:
            signed = by_version[current.version + 1]
            metadata = parse_root(signed)
            if metadata.fleet != current.fleet:
                raise trust.WrongFleetError(f"root v{metadata.version} is for fleet {metadata.fleet!r}")
            if _check and not _signed_by_one_of(signed, _root_keys(current.metadata)):
                raise trust.BadSignatureError(
                    f"root v{metadata.version} is not signed by a root key of v{current.version}"
                )
            if _check and not _signed_by_one_of(signed, _root_keys(metadata)):
                raise trust.BadSignatureError(f"root v{metadata.version} is not signed by one of its own root keys")
            current = RootOfTrust(signed, metadata, (*(current.history or (current.signed,)), signed))
        return current
