"""simulator.verified: a simulator process checks each distinct signed bytes once, and anything changed
(body, signature, key) is still checked for real and refused."""

from __future__ import annotations

import time

import pytest
from support.releases import Keys, make_keys, make_release

from protocols import trust
from protocols.roots import DIRECTOR_ROLE, TARGETS_ROLE
from simulator import verified


@pytest.fixture
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def cached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trust, "verify_signature", trust.verify_signature)  # put back after the test
    verified.install()
    verified.install()  # idempotent: not a cache of a cache


def test_the_same_signed_bytes_are_verified_once_and_tampering_is_still_refused(keys: Keys, cached: None) -> None:
    signed = make_release(keys.signer, "v1", 1).signed
    root, now = keys.pinned(), int(time.time() * 1000)
    before = trust.verify_signature.cache_info()  # type: ignore[attr-defined]
    for _ in range(3):  # three devices of the process receiving the same manifest
        root.verify(TARGETS_ROLE, signed.key_id, signed.signature, signed.manifest, now)
    after = trust.verify_signature.cache_info()  # type: ignore[attr-defined]
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 2)
    tampered_body = signed.manifest[:-1] + bytes([signed.manifest[-1] ^ 1])
    tampered_signature = signed.signature[:-1] + bytes([signed.signature[-1] ^ 1])
    for body, signature in ((tampered_body, signed.signature), (signed.manifest, tampered_signature)):
        for _ in range(2):  # refused every time, the remembered answer included
            with pytest.raises(trust.BadSignatureError):
                root.verify(TARGETS_ROLE, signed.key_id, signature, body, now)
    director = root.key(trust.key_id(keys.director.public_key().public_bytes_raw()), DIRECTOR_ROLE, now)
    assert not trust.verify_signature(director, signed.signature, signed.manifest)  # the same bytes, another key


def test_bytes_the_cache_cannot_key_are_still_checked(keys: Keys, cached: None) -> None:
    signed = make_release(keys.signer, "v1", 1).signed
    public = keys.pinned().key(signed.key_id, TARGETS_ROLE, int(time.time() * 1000))
    assert trust.verify_signature(public, signed.signature, bytearray(signed.manifest))
    assert not trust.verify_signature(public, signed.signature, bytearray(signed.manifest[:-1]))
