"""The MQTT topic map: pure functions to build, parse and match EdgeFleet topics.

Layout (version 1):
    ef/v1/dev/{device_id}/{channel}     per-device traffic, both directions
    ef/v1/art/{sha256}/{chunk_index}    content-addressed artifact chunks (fleet-wide)

Device ids are 1-64 characters of [A-Za-z0-9_.-], starting with a letter or digit, so they can never
contain MQTT wildcards or level separators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

PREFIX = "ef/v1"
DEVICE_ROOT = f"{PREFIX}/dev"
ARTIFACT_ROOT = f"{PREFIX}/art"

_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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


def device_topic(device_id: str, channel: Channel | str) -> str:
    channel = Channel(channel)
    return f"{DEVICE_ROOT}/{validate_device_id(device_id)}/{channel.value}"


@dataclass(frozen=True)
class DeviceTopic:
    device_id: str
    channel: Channel


def parse_device_topic(topic: str) -> DeviceTopic:
    """Split `ef/v1/dev/{id}/{channel}` into its parts; raise TopicError for anything else."""
    head = DEVICE_ROOT + "/"
    if not topic.startswith(head):
        raise TopicError(f"not a device topic: {topic!r}")
    device_id, sep, rest = topic[len(head) :].partition("/")
    if not sep:
        raise TopicError(f"device topic without a channel: {topic!r}")
    validate_device_id(device_id)
    try:
        channel = Channel(rest)
    except ValueError:
        raise TopicError(f"unknown channel {rest!r} in {topic!r}") from None
    return DeviceTopic(device_id, channel)


def artifact_chunk_topic(sha256: str, index: int) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise TopicError(f"not a sha256 hex digest: {sha256!r}")
    if index < 0:
        raise TopicError(f"negative chunk index: {index}")
    return f"{ARTIFACT_ROOT}/{sha256}/{index}"


def device_subscriptions(device_id: str) -> list[tuple[str, int]]:
    """The (filter, qos) pairs an agent subscribes to: every cloud->device channel of its own."""
    return [
        (device_topic(device_id, ch), ch.spec.qos) for ch in Channel if ch.spec.direction is Direction.DOWN
    ]


def cloud_subscriptions(share_group: str | None = None) -> list[tuple[str, int]]:
    """The (filter, qos) pairs the cloud subscribes to: every device->cloud channel of every device.

    With share_group, filters become MQTT 5 shared subscriptions (`$share/{group}/...`) so that several
    cloud workers split the load.
    """
    filters = [
        (f"{DEVICE_ROOT}/+/{ch.value}", ch.spec.qos) for ch in Channel if ch.spec.direction is Direction.UP
    ]
    if share_group:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", share_group):
            raise TopicError(f"invalid share group {share_group!r}")
        filters = [(f"$share/{share_group}/{f}", q) for f, q in filters]
    return filters


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (`+` one level, `#` the rest), $-topics excluded from wildcard roots."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2]
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
