"""Root metadata (protocols.roots): pinning, following rotations, revocation; each forged chain refused."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support.fleet_keys import NOW_MS, FleetKeys

from protocols import trust
from protocols.codes import ErrorCode
from protocols.roots import DIRECTOR_ROLE, ROOT_ROLE, TARGETS_ROLE, RootOfTrust
from protocols.signing import next_root, raw_public, role_key, sign_root
from protocols.trust import key_id
from protocols.v1 import messages_pb2 as pb


def test_a_device_pins_version_one_and_finds_each_role_key() -> None:
    keys = FleetKeys()
    root = keys.pinned()
    assert (root.version, root.fleet) == (1, "lab")
    for role in (ROOT_ROLE, TARGETS_ROLE, DIRECTOR_ROLE):
        private = getattr(keys, role)
        assert root.key(key_id(raw_public(private)), role, NOW_MS) == raw_public(private)


def test_a_key_is_only_good_for_its_own_role() -> None:
    keys = FleetKeys()
    with pytest.raises(trust.UnknownKeyError):
        keys.pinned().key(key_id(raw_public(keys.targets)), DIRECTOR_ROLE, NOW_MS)


def test_pinning_a_root_not_signed_by_its_own_root_key_is_refused() -> None:
    keys = FleetKeys()
    forged = sign_root(keys.latest, Ed25519PrivateKey.generate())
    with pytest.raises(trust.BadSignatureError):
        RootOfTrust.pin(forged)


def test_pinning_another_fleets_root_is_refused() -> None:
    with pytest.raises(trust.WrongFleetError):
        RootOfTrust.pin(FleetKeys(fleet="other").chain[0], fleet="lab")


def test_a_device_follows_every_rotation_from_the_version_it_holds() -> None:
    keys = FleetKeys()
    pinned = keys.pinned()
    keys.rotate(TARGETS_ROLE)
    keys.rotate(ROOT_ROLE)
    new_director = keys.rotate(DIRECTOR_ROLE)
    advanced = pinned.advance(keys.chain)
    assert advanced.version == 4
    assert advanced.key(key_id(raw_public(new_director)), DIRECTOR_ROLE, NOW_MS) == raw_public(new_director)
    assert pinned.version == 1  # immutable: a refused or unused chain changes nothing


def test_a_rotated_out_key_is_unknown_after_the_rotation() -> None:
    keys = FleetKeys()
    old = key_id(raw_public(keys.targets))
    keys.rotate(TARGETS_ROLE)
    with pytest.raises(trust.UnknownKeyError):
        keys.pinned().advance(keys.chain).key(old, TARGETS_ROLE, NOW_MS)


def test_a_revoked_key_is_refused_with_its_own_code_before_its_expiry() -> None:
    keys = FleetKeys()
    kid = key_id(raw_public(keys.director))
    keys.revoke(kid)
    with pytest.raises(trust.RevokedKeyError) as refused:
        keys.pinned().advance(keys.chain).key(kid, DIRECTOR_ROLE, NOW_MS)
    assert refused.value.code == ErrorCode.REVOKED


def test_an_expired_role_key_is_refused() -> None:
    keys = FleetKeys()
    short = Ed25519PrivateKey.generate()
    keys.chain.append(
        sign_root(
            next_root(
                keys.latest, now_ms=NOW_MS, add=[role_key(raw_public(short), TARGETS_ROLE, not_after_ms=NOW_MS + 1)]
            ),
            keys.root,
        )
    )
    root = keys.pinned().advance(keys.chain)
    assert root.key(key_id(raw_public(short)), TARGETS_ROLE, NOW_MS) == raw_public(short)
    with pytest.raises(trust.ExpiredError):
        root.key(key_id(raw_public(short)), TARGETS_ROLE, NOW_MS + 1)


def test_a_stolen_online_key_cannot_sign_a_new_root_version() -> None:
    keys = FleetKeys()
    attacker = Ed25519PrivateKey.generate()
    forged = next_root(keys.latest, now_ms=NOW_MS, add=[role_key(raw_public(attacker), DIRECTOR_ROLE)])
    chain = [*keys.chain, sign_root(forged, keys.director)]
    with pytest.raises(trust.BadSignatureError, match="root key of v1"):
        keys.pinned().advance(chain)


def test_a_new_root_key_must_countersign_its_first_version() -> None:
    keys = FleetKeys()
    new_root = Ed25519PrivateKey.generate()
    metadata = next_root(
        keys.latest,
        now_ms=NOW_MS,
        add=[role_key(raw_public(new_root), ROOT_ROLE)],
        remove_key_ids={key_id(raw_public(keys.root))},
    )
    with pytest.raises(trust.BadSignatureError, match="its own root keys"):
        keys.pinned().advance([*keys.chain, sign_root(metadata, keys.root)])


def test_a_root_version_of_another_fleet_is_refused() -> None:
    keys = FleetKeys()
    metadata = next_root(keys.latest, now_ms=NOW_MS)
    metadata.fleet = "other"
    with pytest.raises(trust.WrongFleetError):
        keys.pinned().advance([*keys.chain, sign_root(metadata, keys.root)])


def test_replayed_old_versions_and_gaps_change_nothing() -> None:
    keys = FleetKeys()
    keys.rotate(TARGETS_ROLE)
    keys.rotate(TARGETS_ROLE)
    current = keys.pinned().advance(keys.chain)
    assert current.advance(keys.chain[:2]).version == 3  # older versions: skipped
    assert keys.pinned().advance([keys.chain[2]]).version == 1  # v3 without v2: the walk stops at v1


def test_garbage_root_metadata_is_malformed() -> None:
    with pytest.raises(trust.MalformedManifestError):
        RootOfTrust.from_bytes(b"\xff\xff\xff")
    with pytest.raises(trust.MalformedManifestError):
        RootOfTrust.pin(pb.SignedRootMetadata(root=pb.RootMetadata(fleet="lab").SerializeToString()))
