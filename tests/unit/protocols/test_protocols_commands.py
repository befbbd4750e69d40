"""Signed commands on a device's `cmd` channel (protocols.commands): only the director's, for this device,
newer than the last, unexpired and bounded, are accepted; every refusal names its code."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support.fleet_keys import NOW_MS, FleetKeys

from protocols import trust
from protocols.commands import MAX_COMMAND_BYTES, MAX_HINT_BINS, parse_signed, sign_command, verify_command
from protocols.signing import sign_assignment
from protocols.v1 import messages_pb2 as pb


def _command(keys: FleetKeys, counter: int = 5, *, device: str = "pi-1", bins: int = 2, **fields: int) -> pb.Command:
    hint = pb.SamplerHint(model=pb.ModelRef(model_id="m", version="1"), features=list(range(bins)), bins=[3] * bins)
    values = {"issued_at_ms": NOW_MS, "expires_at_ms": NOW_MS + 60_000, **fields}
    return pb.Command(fleet=keys.fleet, device_id=device, counter=counter, sampler_hint=hint, **values)


def _verify(keys: FleetKeys, signed: pb.SignedCommand, last: int = 4, now: int = NOW_MS) -> pb.Command:
    return verify_command(parse_signed(signed.SerializeToString()), keys.pinned(), device_id="pi-1",
                          last_counter=last, now_ms=now)  # fmt: skip


def test_a_command_of_the_director_for_this_device_is_accepted() -> None:
    keys = FleetKeys()
    command = _verify(keys, sign_command(keys.director, _command(keys)))
    assert command.counter == 5 and list(command.sampler_hint.features) == [0, 1]


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda k: sign_command(Ed25519PrivateKey.generate(), _command(k)), "unknown_key"),  # forged: no role
        (lambda k: sign_command(k.targets, _command(k)), "unknown_key"),  # a targets key is not the director
        (lambda k: _tampered(sign_command(k.director, _command(k))), "bad_signature"),
        (lambda k: sign_command(k.director, _command(k, device="pi-2")), "wrong_device"),
        (lambda k: sign_command(k.director, _command(k, 4)), "replay"),  # not above the last accepted
        (lambda k: sign_command(k.director, _command(k, expires_at_ms=NOW_MS)), "expired"),
        (lambda k: sign_command(k.director, _command(k, expires_at_ms=0)), "malformed"),  # no expiry
        (lambda k: sign_command(k.director, _command(k, bins=MAX_HINT_BINS + 1)), "too_large"),
        (lambda k: _rewrapped_assignment(k), "bad_signature"),  # the director's assignment bytes as a command
    ],
)
def test_refusals_carry_their_code(make, code: str) -> None:  # type: ignore[no-untyped-def]
    keys = FleetKeys()
    with pytest.raises(trust.VerificationError) as info:
        _verify(keys, make(keys))
    assert info.value.code == code, info.value


def test_another_fleets_command_is_refused() -> None:
    keys = FleetKeys()
    command = _command(keys)
    command.fleet = "elsewhere"
    with pytest.raises(trust.WrongFleetError):
        _verify(keys, sign_command(keys.director, command))


def test_an_oversized_payload_is_refused_unread() -> None:
    keys = FleetKeys()
    command = _command(keys, bins=0)
    command.sampler_hint.features.extend(range(1_000_000))  # a hint naming 10^6 bins
    command.sampler_hint.bins.extend([0] * 1_000_000)
    payload = sign_command(keys.director, command).SerializeToString()
    assert len(payload) > MAX_COMMAND_BYTES
    with pytest.raises(trust.TooLargeError, match="at most 16384"):
        parse_signed(payload)
    with pytest.raises(trust.MalformedManifestError):
        parse_signed(b"\xff\xff\xff")


def test_a_hint_with_unpaired_bins_is_refused() -> None:
    keys = FleetKeys()
    command = _command(keys)
    command.sampler_hint.bins.append(1)
    with pytest.raises(trust.MalformedManifestError, match="2 features for 3 bins"):
        _verify(keys, sign_command(keys.director, command))


def test_a_rotated_director_key_signs_commands_once_the_device_follows_the_root() -> None:
    keys = FleetKeys()
    old = keys.director
    keys.rotate("director")
    root = keys.pinned().advance(keys.chain)
    signed = sign_command(keys.director, _command(keys))
    assert verify_command(signed, root, device_id="pi-1", last_counter=0, now_ms=NOW_MS).counter == 5
    with pytest.raises(trust.UnknownKeyError):  # the retired key no longer signs for this device
        verify_command(sign_command(old, _command(keys)), root, device_id="pi-1", last_counter=0, now_ms=NOW_MS)


def _tampered(signed: pb.SignedCommand) -> pb.SignedCommand:
    command = pb.Command.FromString(signed.command)
    command.sampler_hint.bins[0] = 0
    signed.command = command.SerializeToString()
    return signed


def _rewrapped_assignment(keys: FleetKeys) -> pb.SignedCommand:
    assignment = pb.Assignment(fleet=keys.fleet, device_id="pi-1", counter=9, expires_at_ms=NOW_MS + 60_000)
    signed = sign_assignment(keys.director, assignment)
    return pb.SignedCommand(command=signed.assignment, key_id=signed.key_id, signature=signed.signature)
