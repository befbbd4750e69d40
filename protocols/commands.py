"""Signed commands from the cloud to one device, on its `cmd` channel (pure): the first, a SamplerHint.

A command is a statement of the director (the role that already signs each device's assignments), so only
the cloud can make one: the broker lets only the cloud publish on a device's `cmd` topic, and the device
acts on a command only when:

    it is at most MAX_COMMAND_BYTES long (checked before parsing)  too_large
    a director key of its root signed COMMAND_CONTEXT + its bytes  unknown_key / revoked / bad_signature
    it names this fleet and this device                            wrong_fleet / wrong_device
    its counter is above the last this device accepted             replay
    it has an expiry, not yet passed                               malformed / expired
    a sampler hint names at most MAX_HINT_BINS bins, as many       too_large / malformed
    features as bins

The context prefix keeps a signed assignment's bytes (also the director's) from passing as a command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from protocols import SCHEMA_VERSION, trust
from protocols.roots import DIRECTOR_ROLE, RootOfTrust
from protocols.v1 import messages_pb2 as pb

COMMAND_CONTEXT = b"edgefleet.v1.Command\x00"
MAX_COMMAND_BYTES = 16_384  # a SignedCommand's payload; a full hint of MAX_HINT_BINS bins is ~6 KB
MAX_HINT_BINS = 2_048  # 64 features x 32 bins; a profile has ~10 bins a feature

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def sign_command(director_key: Ed25519PrivateKey, command: pb.Command) -> pb.SignedCommand:
    """The command signed by a director key (the cloud's; devices never sign)."""
    from protocols.signing import raw_public  # cryptography at the top: not on a device that only verifies

    body = command.SerializeToString(deterministic=True)
    return pb.SignedCommand(
        schema_version=SCHEMA_VERSION,
        command=body,
        key_id=trust.key_id(raw_public(director_key)),
        signature=director_key.sign(COMMAND_CONTEXT + body),
    )


def parse_signed(payload: bytes) -> pb.SignedCommand:
    """The SignedCommand in an MQTT payload, refused unread when it is too large."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise trust.TooLargeError(f"a command of {len(payload)} bytes (at most {MAX_COMMAND_BYTES})")
    try:
        return pb.SignedCommand.FromString(payload)
    except (DecodeError, ValueError) as exc:
        raise trust.MalformedManifestError(f"not a SignedCommand: {exc}") from None


def verify_command(
    signed: pb.SignedCommand, root: RootOfTrust, *, device_id: str, last_counter: int, now_ms: int
) -> pb.Command:
    """The Command if the director signed it for this device, newer than the last accepted and unexpired;
    else raise the refusal (its `code` says which). Pure: the caller keeps the new counter."""
    root.verify(DIRECTOR_ROLE, signed.key_id, signed.signature, COMMAND_CONTEXT + signed.command, now_ms)
    try:
        command = pb.Command.FromString(signed.command)
    except (DecodeError, ValueError) as exc:
        raise trust.MalformedManifestError(f"signed command bytes do not parse: {exc}") from None
    trust.check_addressed("command", command, root.fleet, device_id, last_counter)
    if command.expires_at_ms <= 0:
        raise trust.MalformedManifestError(f"command {command.counter} has no expiry")
    if command.expires_at_ms <= now_ms:
        raise trust.ExpiredError(f"command {command.counter} expired at {command.expires_at_ms} ms")
    if command.HasField("sampler_hint"):
        check_hint(command.sampler_hint)
    return command


def check_hint(hint: pb.SamplerHint) -> None:
    if len(hint.features) > MAX_HINT_BINS or len(hint.bins) > MAX_HINT_BINS:
        raise trust.TooLargeError(f"a sampler hint of {max(len(hint.features), len(hint.bins))} bins "
                                  f"(at most {MAX_HINT_BINS})")  # fmt: skip
    if len(hint.features) != len(hint.bins):
        raise trust.MalformedManifestError(
            f"a sampler hint with {len(hint.features)} features for {len(hint.bins)} bins"
        )
    if hint.features and not hint.model.model_id:
        raise trust.MalformedManifestError("a sampler hint that names no model")
