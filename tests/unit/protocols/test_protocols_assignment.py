"""Per-device assignments (protocols.assignment): the device acts only on what the director signed for it."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support.fleet_keys import DAY_MS, NOW_MS, FleetKeys

from protocols import trust
from protocols.assignment import manifest_digest, verify_assigned_manifest, verify_desired
from protocols.codes import ErrorCode
from protocols.roots import DIRECTOR_ROLE, TARGETS_ROLE
from protocols.signing import Signer, raw_public
from protocols.trust import key_id
from protocols.v1 import messages_pb2 as pb


def check(keys: FleetKeys, desired, *, device_id: str = "pi-01", last_counter: int = 0, now_ms: int = NOW_MS):  # type: ignore[no-untyped-def]
    return verify_desired(desired, keys.pinned(), device_id=device_id, last_counter=last_counter, now_ms=now_ms)


def test_an_honest_assignment_yields_its_manifest() -> None:
    keys = FleetKeys()
    verified = check(keys, keys.desired("pi-01", 1, keys.manifest("m", 3)))
    assert (verified.assignment.counter, verified.manifest.model_id, verified.manifest.sequence) == (1, "m", 3)


def test_an_assignment_of_no_model_needs_no_manifest() -> None:
    keys = FleetKeys()
    verified = check(keys, keys.desired("pi-01", 2, None))
    assert verified.manifest is None and verified.assignment.manifest_sha256 == ""


def test_another_devices_assignment_readdressed_is_refused() -> None:
    keys = FleetKeys()
    desired = keys.desired("pi-01", 1, keys.manifest())
    desired.device_id = "pi-02"  # the unsigned wrapper says pi-02; the signed assignment does not
    with pytest.raises(trust.WrongDeviceError) as refused:
        check(keys, desired, device_id="pi-02")
    assert refused.value.code == ErrorCode.WRONG_DEVICE


def test_a_replayed_older_assignment_is_refused() -> None:
    keys = FleetKeys()
    with pytest.raises(trust.ReplayError):
        check(keys, keys.desired("pi-01", 4, keys.manifest()), last_counter=4)


def test_an_operator_rollback_to_an_older_release_is_accepted() -> None:
    keys = FleetKeys()
    verified = check(keys, keys.desired("pi-01", 6, keys.manifest("m", 1)), last_counter=5)
    assert verified.manifest.sequence == 1


def test_a_signed_manifest_never_assigned_is_refused() -> None:
    keys = FleetKeys()
    desired = keys.desired("pi-01", 1, keys.manifest("m", 2))
    desired.manifest.CopyFrom(keys.manifest("other-model", 9))  # validly signed, but not the assigned one
    with pytest.raises(trust.NotAssignedError):
        check(keys, desired)


def test_an_assignment_naming_a_manifest_the_desired_state_lacks_is_refused() -> None:
    keys = FleetKeys()
    desired = keys.desired("pi-01", 1, keys.manifest())
    desired.ClearField("manifest")
    with pytest.raises(trust.NotAssignedError):
        check(keys, desired)


def test_an_unsigned_desired_state_is_refused() -> None:
    keys = FleetKeys()
    desired = keys.desired("pi-01", 1, keys.manifest())
    desired.ClearField("assignment")
    with pytest.raises(trust.MalformedManifestError):
        check(keys, desired)


def test_an_assignment_signed_by_the_targets_key_is_refused() -> None:
    keys = FleetKeys()
    with pytest.raises(trust.UnknownKeyError):
        check(keys, keys.desired("pi-01", 1, keys.manifest(), key=keys.targets))


def test_a_manifest_signed_by_the_director_key_is_refused() -> None:
    keys = FleetKeys()
    signed = Signer(keys.director).sign(pb.Manifest(model_id="m", sequence=1))
    with pytest.raises(trust.UnknownKeyError):
        check(keys, keys.desired("pi-01", 1, signed))


def test_a_tampered_assignment_is_refused() -> None:
    keys = FleetKeys()
    desired = keys.desired("pi-01", 1, keys.manifest())
    desired.assignment.assignment = desired.assignment.assignment.replace(b"pi-01", b"pi-02")
    with pytest.raises(trust.BadSignatureError):
        check(keys, desired, device_id="pi-02")


def test_an_expired_assignment_is_refused_for_installing() -> None:
    keys = FleetKeys()
    with pytest.raises(trust.ExpiredError):
        check(keys, keys.desired("pi-01", 1, keys.manifest()), now_ms=NOW_MS + DAY_MS)


def test_an_expired_manifest_is_refused() -> None:
    keys = FleetKeys()
    with pytest.raises(trust.ExpiredError) as refused:
        check(keys, keys.desired("pi-01", 1, keys.manifest(expires_at_ms=NOW_MS - 1)))
    assert refused.value.code == ErrorCode.EXPIRED


def test_a_desired_state_verifies_after_a_trip_over_the_wire() -> None:
    keys = FleetKeys()
    wire = keys.desired("pi-01", 1, keys.manifest("m", 3)).SerializeToString()
    verified = check(keys, pb.DesiredState.FromString(wire))
    assert (verified.manifest.model_id, verified.manifest.sequence) == ("m", 3)


def _assigned(keys: FleetKeys, signed: pb.SignedManifest) -> pb.Assignment:
    """An assignment naming exactly these manifest bytes (what even a stolen director key could sign)."""
    return pb.Assignment(fleet=keys.fleet, device_id="pi-01", counter=1, manifest_sha256=manifest_digest(signed))


def test_a_changed_manifest_byte_is_a_bad_signature_even_when_assigned() -> None:
    keys = FleetKeys()
    signed = keys.manifest()
    tampered = bytearray(signed.manifest)
    tampered[-1] ^= 0x01
    signed.manifest = bytes(tampered)
    with pytest.raises(trust.BadSignatureError) as refused:
        verify_assigned_manifest(signed, _assigned(keys, signed), keys.pinned(), now_ms=NOW_MS)
    assert refused.value.code == ErrorCode.BAD_SIGNATURE


def test_a_manifest_signed_by_another_fleets_targets_key_is_unknown_even_when_assigned() -> None:
    keys = FleetKeys()
    signed = FleetKeys().manifest()  # a whole other key hierarchy
    with pytest.raises(trust.UnknownKeyError) as refused:
        verify_assigned_manifest(signed, _assigned(keys, signed), keys.pinned(), now_ms=NOW_MS)
    assert refused.value.code == ErrorCode.UNKNOWN_KEY


def test_another_fleets_assignment_is_refused() -> None:
    keys = FleetKeys()
    with pytest.raises(trust.WrongFleetError):
        check(keys, keys.desired("pi-01", 1, keys.manifest(), fleet="other"))


def test_a_rotated_director_key_is_learnt_from_the_chain_in_the_desired_state() -> None:
    keys = FleetKeys()
    pinned = keys.pinned()
    old_director = keys.director
    keys.rotate(DIRECTOR_ROLE)
    keys.rotate(TARGETS_ROLE)
    verified = verify_desired(
        keys.desired("pi-01", 1, keys.manifest()), pinned, device_id="pi-01", last_counter=0, now_ms=NOW_MS
    )
    assert verified.root.version == 3
    # the retired director key no longer counts once the device holds the new root
    with pytest.raises(trust.UnknownKeyError):
        verify_desired(
            keys.desired("pi-01", 2, keys.manifest(), key=old_director),
            verified.root,
            device_id="pi-01",
            last_counter=1,
            now_ms=NOW_MS,
        )


def test_a_revoked_director_key_is_refused_although_unexpired() -> None:
    keys = FleetKeys()
    stolen = keys.director
    keys.revoke(key_id(raw_public(stolen)))
    with pytest.raises(trust.RevokedKeyError):
        check(keys, keys.desired("pi-01", 1, keys.manifest(), key=stolen))


def test_an_attacker_key_added_by_nobody_is_unknown() -> None:
    keys = FleetKeys()
    with pytest.raises(trust.UnknownKeyError):
        check(keys, keys.desired("pi-01", 1, keys.manifest(), key=Ed25519PrivateKey.generate()))
