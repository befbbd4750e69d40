"""The director (Uptane's role): signs each device's assignment, the statement a device acts on.

A manifest (signed by the targets key) says what a release is; an assignment (signed by the director key)
says that *this* device of *this* fleet should run the manifest with *this* digest now, with a counter
that orders it after every earlier assignment of the device (`protocols.assignment` checks it). The
counter is the device's desired generation, which the database already keeps monotonic per device, so a
rollback to an older release is simply the next counter.

A `Director` is an immutable snapshot of the key store (fleet, director key, trust chain); the refresher
swaps in a new one when a `keys rotate`/`keys revoke` changed the store.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.registry.keys import KeyStore
from protocols import SCHEMA_VERSION
from protocols.assignment import manifest_digest
from protocols.signing import sign_assignment
from protocols.v1 import messages_pb2 as pb

DEFAULT_ASSIGNMENT_VALID_S = 7 * 86_400


@dataclass(frozen=True)
class Director:
    fleet: str
    key: Ed25519PrivateKey
    trust: pb.TrustChain
    assignment_valid_ms: int = DEFAULT_ASSIGNMENT_VALID_S * 1000

    @classmethod
    def from_keys(cls, keys: KeyStore, *, assignment_valid_s: int = DEFAULT_ASSIGNMENT_VALID_S) -> Director:
        chain = keys.chain()
        chain.schema_version = chain.schema_version or SCHEMA_VERSION
        return cls(keys.fleet, keys.director_key(), chain, assignment_valid_s * 1000)

    @property
    def root_version(self) -> int:
        """The newest root version in the chain this director publishes."""
        return int(pb.RootMetadata.FromString(self.trust.roots[-1].root).version)

    def assignment(
        self,
        device_id: str,
        deployment_id: str,
        counter: int,
        manifest: pb.SignedManifest | None,
        *,
        now_ms: int,
        expires_at_ms: int | None = None,
    ) -> pb.Assignment:
        """The unsigned assignment; `expires_at_ms` defaults to now + the assignment lifetime."""
        return pb.Assignment(
            fleet=self.fleet,
            device_id=device_id,
            deployment_id=deployment_id,
            counter=counter,
            manifest_sha256="" if manifest is None else manifest_digest(manifest),
            issued_at_ms=now_ms,
            expires_at_ms=now_ms + self.assignment_valid_ms if expires_at_ms is None else expires_at_ms,
        )

    def sign(self, assignment: pb.Assignment) -> pb.SignedAssignment:
        return sign_assignment(self.key, assignment)
