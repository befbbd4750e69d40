"""A fleet's keys in memory, for tests of the trust chain: root, targets and director keys, the root
chain they make, and helpers to sign releases and per-device assignments. Uses protocols only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import SCHEMA_VERSION
from protocols.roots import DIRECTOR_ROLE, ROOT_ROLE, TARGETS_ROLE, RootOfTrust
from protocols.signing import Signer, first_root, next_root, raw_public, role_key, sign_assignment, sign_root
from protocols.trust import key_id
from protocols.v1 import messages_pb2 as pb

NOW_MS = 1_800_000_000_000
DAY_MS = 86_400_000


@dataclass
class FleetKeys:
    fleet: str = "lab"
    root: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    targets: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    director: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    chain: list[pb.SignedRootMetadata] = field(default_factory=list)

    def __post_init__(self) -> None:
        metadata = first_root(
            self.fleet,
            [
                role_key(raw_public(self.root), ROOT_ROLE),
                role_key(raw_public(self.targets), TARGETS_ROLE),
                role_key(raw_public(self.director), DIRECTOR_ROLE),
            ],
            now_ms=NOW_MS,
        )
        self.chain = [sign_root(metadata, self.root)]

    @property
    def latest(self) -> pb.RootMetadata:
        return pb.RootMetadata.FromString(self.chain[-1].root)

    def pinned(self) -> RootOfTrust:
        """What a device provisioned now would hold: the first root version."""
        return RootOfTrust.pin(self.chain[0], fleet=self.fleet)

    def trust_chain(self) -> pb.TrustChain:
        return pb.TrustChain(schema_version=SCHEMA_VERSION, roots=self.chain)

    # ------------------------------------------------------------------ key lifecycle

    def rotate(self, role: str) -> Ed25519PrivateKey:
        """Replace the key of `role` with a new one in a new root version; return the new key."""
        new = Ed25519PrivateKey.generate()
        old = getattr(self, role)
        current = self.latest
        metadata = next_root(
            current, now_ms=NOW_MS, add=[role_key(raw_public(new), role)], remove_key_ids={key_id(raw_public(old))}
        )
        # a new root key must sign its own first version, beside the old root key
        signers = (self.root, new) if role == ROOT_ROLE else (self.root,)
        self.chain.append(sign_root(metadata, *signers))
        setattr(self, role, new)
        return new

    def revoke(self, kid: str) -> None:
        self.chain.append(sign_root(next_root(self.latest, now_ms=NOW_MS, revoke_key_ids={kid}), self.root))

    # ------------------------------------------------------------------ statements

    def manifest(self, model_id: str = "m", sequence: int = 1, *, expires_at_ms: int = 0) -> pb.SignedManifest:
        data = f"{model_id}-{sequence}".encode()
        manifest = pb.Manifest(
            model_id=model_id,
            version=str(sequence),
            sequence=sequence,
            created_at_ms=NOW_MS,
            expires_at_ms=expires_at_ms,
            artifacts=[pb.Artifact(name="model.onnx", sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))],
        )
        return Signer(self.targets).sign(manifest)

    def assignment(
        self,
        device_id: str,
        counter: int,
        signed_manifest: pb.SignedManifest | None,
        *,
        deployment_id: str = "dep-1",
        expires_at_ms: int = NOW_MS + DAY_MS,
        fleet: str | None = None,
        key: Ed25519PrivateKey | None = None,
    ) -> pb.SignedAssignment:
        digest = "" if signed_manifest is None else hashlib.sha256(signed_manifest.manifest).hexdigest()
        assignment = pb.Assignment(
            fleet=self.fleet if fleet is None else fleet,
            device_id=device_id,
            deployment_id=deployment_id,
            counter=counter,
            manifest_sha256=digest,
            issued_at_ms=NOW_MS,
            expires_at_ms=expires_at_ms,
        )
        return sign_assignment(key or self.director, assignment)

    def desired(
        self, device_id: str, counter: int, signed_manifest: pb.SignedManifest | None, **kwargs: object
    ) -> pb.DesiredState:
        desired = pb.DesiredState(
            schema_version=SCHEMA_VERSION,
            device_id=device_id,
            assignment=self.assignment(device_id, counter, signed_manifest, **kwargs),  # type: ignore[arg-type]
            trust=self.trust_chain(),
        )
        if signed_manifest is not None:
            desired.manifest.CopyFrom(signed_manifest)
        return desired
