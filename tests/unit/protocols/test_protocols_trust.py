"""The trust chain: each way a manifest or artifact can be wrong is refused with its own error."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import trust
from protocols.signing import Signer, delegate, raw_public
from protocols.v1 import messages_pb2 as pb

NOW_MS = int(time.time() * 1000)


@dataclass(frozen=True)
class Keys:
    """A key hierarchy in memory: the root and the targets key it delegated to (no key files: the cloud's
    key store has its own tests in tests/unit/cloud/registry/test_cloud_keys.py)."""

    root: Ed25519PrivateKey
    signer: Signer

    @property
    def root_public(self) -> bytes:
        return raw_public(self.root)


def _hierarchy() -> Keys:
    root, targets = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    return Keys(root, Signer(targets, delegate(root, raw_public(targets), now_ms=NOW_MS, valid_days=365)))


@pytest.fixture
def keys() -> Keys:
    return _hierarchy()


def _manifest(sequence: int = 5, expires_at_ms: int = 0, data: bytes = b"model-bytes") -> pb.Manifest:
    return pb.Manifest(
        model_id="digits",
        version=str(sequence),
        sequence=sequence,
        expires_at_ms=expires_at_ms,
        artifacts=[
            pb.Artifact(name="m.onnx", sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
        ],
    )


def _root(keys: Keys) -> trust.TrustedRoot:
    return trust.TrustedRoot.of(keys.root_public)


def test_a_manifest_signed_by_the_delegated_key_verifies(keys: Keys) -> None:
    signed = keys.signer.sign(_manifest())
    manifest = trust.verify_manifest(signed, _root(keys), now_ms=NOW_MS, installed_sequence=4)
    assert (manifest.model_id, manifest.sequence) == ("digits", 5)


def test_signed_manifest_survives_the_wire(keys: Keys) -> None:
    wire = keys.signer.sign(_manifest()).SerializeToString()
    again = pb.SignedManifest.FromString(wire)
    assert trust.verify_manifest(again, _root(keys), now_ms=NOW_MS).model_id == "digits"


def test_a_changed_manifest_byte_is_a_bad_signature(keys: Keys) -> None:
    signed = keys.signer.sign(_manifest())
    tampered = bytearray(signed.manifest)
    tampered[-1] ^= 0x01
    signed.manifest = bytes(tampered)
    with pytest.raises(trust.BadSignatureError) as info:
        trust.verify_manifest(signed, _root(keys), now_ms=NOW_MS)
    assert info.value.code == "bad_signature"


def test_a_key_the_root_never_delegated_is_unknown(keys: Keys) -> None:
    other = _hierarchy()  # a whole other key hierarchy
    signed = other.signer.sign(_manifest())
    with pytest.raises(trust.UnknownKeyError) as info:
        trust.verify_manifest(signed, _root(keys), now_ms=NOW_MS)
    assert info.value.code == "unknown_key"


def test_a_self_made_delegation_is_not_trusted(keys: Keys) -> None:
    # An attacker signs its own delegation with its own "root": the pinned root did not sign it.
    fake_root = Ed25519PrivateKey.generate()
    attacker = Ed25519PrivateKey.generate()
    forged = delegate(fake_root, raw_public(attacker), now_ms=NOW_MS, valid_days=1)
    forged.root_key_id = trust.key_id(keys.root_public)  # claims to be the real root
    signed = Signer(attacker, forged).sign(_manifest())
    with pytest.raises(trust.UnknownKeyError):
        trust.verify_manifest(signed, _root(keys), now_ms=NOW_MS)


def test_an_expired_delegation_is_refused_as_expired(keys: Keys) -> None:
    root_private = keys.root
    targets = Ed25519PrivateKey.generate()
    old = delegate(root_private, raw_public(targets), now_ms=NOW_MS - 10 * 86_400_000, valid_days=1)
    signed = Signer(targets, old).sign(_manifest())
    with pytest.raises(trust.ExpiredError, match="delegation"):
        trust.verify_manifest(signed, _root(keys), now_ms=NOW_MS)


def test_an_expired_manifest_is_refused(keys: Keys) -> None:
    signed = keys.signer.sign(_manifest(expires_at_ms=NOW_MS - 1))
    with pytest.raises(trust.ExpiredError) as info:
        trust.verify_manifest(signed, _root(keys), now_ms=NOW_MS)
    assert info.value.code == "expired"


@pytest.mark.parametrize("installed", [5, 6])
def test_a_sequence_not_above_the_installed_one_is_a_rollback(keys: Keys, installed: int) -> None:
    signed = keys.signer.sign(_manifest(sequence=5))
    with pytest.raises(trust.RollbackError) as info:
        trust.verify_manifest(signed, _root(keys), now_ms=NOW_MS, installed_sequence=installed)
    assert info.value.code == "rollback"


def test_artifact_bytes_are_checked_for_size_then_digest() -> None:
    artifact = _manifest(data=b"model-bytes").artifacts[0]
    trust.verify_artifact(artifact, b"model-bytes")
    with pytest.raises(trust.SizeMismatchError):
        trust.verify_artifact(artifact, b"model-bytes+")
    with pytest.raises(trust.DigestMismatchError):
        trust.verify_artifact(artifact, b"model-byteZ")


def test_rotating_the_root_key_keeps_both_pins_valid(keys: Keys) -> None:
    new = _hierarchy()
    both = trust.TrustedRoot.of(keys.root_public, new.root_public)
    for hierarchy in (keys, new):
        assert trust.verify_manifest(hierarchy.signer.sign(_manifest()), both, now_ms=NOW_MS)
