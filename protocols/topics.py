"""The MQTT topic map: pure functions to build, parse and match EdgeFleet topics.

Layout (version 1):
    ef/v1/{fleet}/dev/{device_id}/{channel}     per-device traffic, both directions
    ef/v1/{fleet}/trust                         the fleet's TrustChain (retained, cloud -> every device)
    ef/v1/{fleet}/art/{sha256}/{chunk_size}/{index}
                                                content-addressed artifact chunks, retained, published
                                                once per rollout (cloud -> every device of the fleet)
    ef/v1/{fleet}/art/manifest/{sha256}         a SignedManifest whose signed bytes hash to sha256, retained,
                                                published once per release (cloud -> every device of the
                                                fleet that reported the `manifest_by_digest` capability)

The fleet level keeps setups that share a broker apart (two clouds never answer each other's devices, and
retained messages of one never show up as devices of the other) and gives broker ACLs one subtree per
fleet. A device learns its fleet from the root metadata it pins. Device ids are 1-64 characters of
[A-Za-z0-9_.-], fleet names 1-32 of [a-z0-9-], both starting with a letter or digit, so neither can hold
MQTT wildcards or level separators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

PREFIX = "ef/v1"
DEFAULT_FLEET = "default"  # for tests and tools; the agent and the cloud always name their own fleet

_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FLEET = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class TopicError(ValueError):
    """A topic or device id that does not follow the EdgeFleet topic map."""


class Direction(StrEnum):
    UP = "up"  # device -> cloud
    DOWN = "down"  # cloud -> device


@dataclass(frozen=True)
class ChannelSpec:
    direction: Direction
    qos: int
    retain: bool


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    SAMPLES = "samples"
    FEEDBACK = "feedback"
    EVENTS = "events"
    REPORTED = "reported"
    PRESENCE = "presence"
    ARTIFACT_REQUEST = "artifact/req"
    DESIRED = "desired"
    ARTIFACT_DATA = "artifact/data"
    COMMAND = "cmd"

    @property
    def spec(self) -> ChannelSpec:
        return CHANNEL_SPECS[self]


CHANNEL_SPECS: dict[Channel, ChannelSpec] = {
    Channel.TELEMETRY: ChannelSpec(Direction.UP, qos=1, retain=False),
    Channel.SAMPLES: ChannelSpec(Direction.UP, qos=1, retain=False),
    Channel.FEEDBACK: ChannelSpec(Direction.UP, qos=1, retain=False),
    Channel.EVENTS: ChannelSpec(Direction.UP, qos=1, retain=False),
    Channel.REPORTED: ChannelSpec(Direction.UP, qos=1, retain=True),
    Channel.PRESENCE: ChannelSpec(Direction.UP, qos=1, retain=True),
    Channel.ARTIFACT_REQUEST: ChannelSpec(Direction.UP, qos=1, retain=False),
    Channel.DESIRED: ChannelSpec(Direction.DOWN, qos=1, retain=True),
    Channel.ARTIFACT_DATA: ChannelSpec(Direction.DOWN, qos=1, retain=False),
    Channel.COMMAND: ChannelSpec(Direction.DOWN, qos=1, retain=False),
}


def validate_device_id(device_id: str) -> str:
    """Return device_id unchanged, or raise TopicError saying why it is not allowed."""
    if not isinstance(device_id, str) or not _DEVICE_ID.match(device_id):
        raise TopicError(
            f"invalid device id {device_id!r}: use 1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit"
        )
    return device_id


def validate_fleet(fleet: str) -> str:
    """Return fleet unchanged, or raise TopicError: 1-32 of a-z 0-9 -, starting with a letter or digit."""
    if not isinstance(fleet, str) or not _FLEET.match(fleet):
        raise TopicError(f"invalid fleet name {fleet!r}: use 1-32 of a-z 0-9 -, starting with a letter or digit")
    return fleet


def fleet_root(fleet: str = DEFAULT_FLEET) -> str:
    return f"{PREFIX}/{validate_fleet(fleet)}"


def device_topic(device_id: str, channel: Channel | str, *, fleet: str = DEFAULT_FLEET) -> str:
    channel = Channel(channel)
    return f"{fleet_root(fleet)}/dev/{validate_device_id(device_id)}/{channel.value}"


def trust_topic(fleet: str = DEFAULT_FLEET) -> str:
    """Where the cloud keeps the fleet's TrustChain retained; every device of the fleet reads it."""
    return f"{fleet_root(fleet)}/trust"


def acl_pattern(channel: Channel, *, fleet: str) -> str:
    """A channel's topic with Mosquitto's `%u` (the connecting user name) in place of the device id."""
    return f"{fleet_root(fleet)}/dev/%u/{channel.value}"


@dataclass(frozen=True)
class DeviceTopic:
    fleet: str
    device_id: str
    channel: Channel


def parse_device_topic(topic: str) -> DeviceTopic:
    """Split `ef/v1/{fleet}/dev/{id}/{channel}` into its parts; raise TopicError for anything else."""
    head = PREFIX + "/"
    fleet, sep, rest = topic[len(head) :].partition("/") if topic.startswith(head) else ("", "", "")
    kind, sep2, rest = rest.partition("/")
    if not sep or not sep2 or kind != "dev":
        raise TopicError(f"not a device topic: {topic!r}")
    validate_fleet(fleet)
    device_id, sep, channel_name = rest.partition("/")
    if not sep:
        raise TopicError(f"device topic without a channel: {topic!r}")
    validate_device_id(device_id)
    try:
        channel = Channel(channel_name)
    except ValueError:
        raise TopicError(f"unknown channel {channel_name!r} in {topic!r}") from None
    return DeviceTopic(fleet, device_id, channel)


def artifact_chunk_topic(sha256: str, chunk_size: int, index: int, *, fleet: str = DEFAULT_FLEET) -> str:
    """Where chunk `index` of an artifact cut into `chunk_size` pieces is kept retained for the whole fleet.

    Content-addressed: the same bytes in the same layout always have the same topics, so one copy serves
    every rollout and every device that needs them (each checks them against its signed manifest)."""
    if index < 0:
        raise TopicError(f"negative chunk index: {index}")
    return f"{artifact_chunk_filter(sha256, chunk_size, fleet=fleet)[:-1]}{index}"


def artifact_chunk_filter(sha256: str, chunk_size: int, *, fleet: str = DEFAULT_FLEET) -> str:
    """The filter an agent subscribes to for every chunk of one artifact in one layout."""
    if not _SHA256.fullmatch(sha256):
        raise TopicError(f"not a sha256 hex digest: {sha256!r}")
    if chunk_size <= 0:
        raise TopicError(f"chunk size must be positive, got {chunk_size}")
    return f"{artifacts_root(fleet)}/{sha256}/{chunk_size}/+"


MANIFESTS = "manifest"  # not 64 hex digits, so never an artifact's level of the same subtree


def manifest_topic(sha256: str, *, fleet: str = DEFAULT_FLEET) -> str:
    """Where the signed manifest whose signed bytes hash to sha256 is kept retained for the whole fleet.

    Content-addressed like the chunks: an assignment names this digest, so a device reads its manifest here
    instead of in every device's desired state, and checks the bytes against the digest it was assigned."""
    if not _SHA256.fullmatch(sha256):
        raise TopicError(f"not a sha256 hex digest: {sha256!r}")
    return f"{artifacts_root(fleet)}/{MANIFESTS}/{sha256}"


def parse_manifest_topic(topic: str, *, fleet: str = DEFAULT_FLEET) -> str | None:
    """The digest a fleet-wide manifest topic names; None for any other topic."""
    head = f"{artifacts_root(fleet)}/{MANIFESTS}/"
    digest = topic[len(head) :] if topic.startswith(head) else ""
    return digest if _SHA256.fullmatch(digest) else None


def artifacts_root(fleet: str = DEFAULT_FLEET) -> str:
    """The fleet's artifact subtree: devices may read it, only the cloud may write it."""
    return f"{fleet_root(fleet)}/art"


def device_subscriptions(device_id: str, *, fleet: str = DEFAULT_FLEET) -> list[tuple[str, int]]:
    """The (filter, qos) pairs an agent subscribes to: every cloud->device channel of its own, and the
    fleet's trust topic."""
    own = [
        (device_topic(device_id, ch, fleet=fleet), ch.spec.qos) for ch in Channel if ch.spec.direction is Direction.DOWN
    ]
    return [*own, (trust_topic(fleet), 1)]


def cloud_subscriptions(share_group: str | None = None, *, fleet: str = DEFAULT_FLEET) -> list[tuple[str, int]]:
    """The (filter, qos) pairs the cloud subscribes to: every device->cloud channel of every device of its
    fleet (and of no other fleet on the same broker).

    With share_group, filters become MQTT 5 shared subscriptions (`$share/{group}/...`) so that several
    cloud workers split the load.
    """
    filters = [
        (f"{fleet_root(fleet)}/dev/+/{ch.value}", ch.spec.qos) for ch in Channel if ch.spec.direction is Direction.UP
    ]
    if share_group:
        filters = [(shared_filter(share_group, f), q) for f, q in filters]
    return filters


# ------------------------------------------------------------------------ MQTT grammar (names, filters)


def check_topic_name(topic: str) -> str:
    """Return topic if a message may be published to it: non-empty, no wildcards, no NUL."""
    if not isinstance(topic, str) or not topic:
        raise TopicError(f"cannot publish to {topic!r}: the topic must be a non-empty string")
    if "+" in topic or "#" in topic:
        raise TopicError(f"cannot publish to {topic!r}: topic names cannot contain wildcards")
    if "\x00" in topic:
        raise TopicError(f"cannot publish to {topic!r}: topic names cannot contain NUL")
    return topic


def check_topic_filter(topic_filter: str) -> str:
    """Return topic_filter if MQTT allows it: `#` only as the whole last level, `+` only as a whole level,
    and a `$share/{group}/{filter}` well formed (see split_shared_filter)."""
    if not isinstance(topic_filter, str) or not topic_filter:
        raise TopicError(f"topic filter must be a non-empty string, got {topic_filter!r}")
    if "\x00" in topic_filter:
        raise TopicError(f"invalid topic filter {topic_filter!r}: filters cannot contain NUL")
    _group, inner = split_shared_filter(topic_filter)
    levels = inner.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise TopicError(f"invalid topic filter {topic_filter!r}: '#' must be the whole last level")
        if "+" in level and level != "+":
            raise TopicError(f"invalid topic filter {topic_filter!r}: '+' must be a whole level")
    return topic_filter


SHARE_PREFIX = "$share/"
_SHARE_GROUP = re.compile(r"^[A-Za-z0-9_-]+$")


def shared_filter(group: str, topic_filter: str) -> str:
    """The MQTT 5 shared subscription `$share/{group}/{filter}`: brokers hand each message to one member."""
    if not isinstance(group, str) or not _SHARE_GROUP.match(group):
        raise TopicError(f"invalid share group {group!r}: use A-Z a-z 0-9 _ -")
    if topic_filter.startswith(SHARE_PREFIX):
        raise TopicError(f"{topic_filter!r} is already a shared subscription")
    return f"{SHARE_PREFIX}{group}/{topic_filter}"


def split_shared_filter(topic_filter: str) -> tuple[str | None, str]:
    """`$share/{group}/{filter}` -> (group, filter); an ordinary filter -> (None, filter).

    The one rule every part uses (MQTT 5, 4.8.2): the group is a non-empty level without wildcards, and a
    filter must follow it. Anything else starting with `$share/` raises TopicError."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None, topic_filter
    group, sep, inner = topic_filter[len(SHARE_PREFIX) :].partition("/")
    if not group or not sep or not inner or any(c in group for c in "+#"):
        raise TopicError(f"malformed shared subscription {topic_filter!r}: expected $share/GROUP/FILTER")
    return group, inner


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (`+` one level, `#` the rest), $-topics excluded from wildcard roots; a shared
    subscription matches what its inner filter matches."""
    _group, topic_filter = split_shared_filter(topic_filter)
    f_parts = topic_filter.split("/")
    t_parts = topic.split("/")
    if topic.startswith("$") and f_parts[0] in ("+", "#"):
        return False
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts):
            return False
        if part != "+" and part != t_parts[i]:
            return False
    return len(f_parts) == len(t_parts)
