"""Who may publish and read what on the broker: the rules as data, rendered for Mosquitto and checked here.

A device (broker user name = its device id) may publish only on its own upward channels and read only its
own downward channels, its fleet's trust topic and its fleet's artifact chunks (`ef/v1/{fleet}/art/#`,
content-addressed, retained, checked by the device against its signed manifest); the cloud's user may do
anything under its fleet.
Nothing else is granted, so anonymous clients, other fleets' subtrees and wildcards spanning devices are
refused. The same grants render to a Mosquitto `acl_file` and back the embedded broker's checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from protocols.topics import Channel, Direction, acl_pattern, artifacts_root, fleet_root, topic_matches, trust_topic

USER_PLACEHOLDER = "%u"  # Mosquitto's pattern substitution: the connecting client's user name
CLOUD_USER = "edgefleet-cloud"  # the cloud's own broker user; no device may take this name


class Access(StrEnum):
    READ = "read"
    WRITE = "write"
    READWRITE = "readwrite"

    def covers(self, wanted: Access) -> bool:
        return self is Access.READWRITE or self is wanted


@dataclass(frozen=True)
class Grant:
    access: Access
    topic: str  # an MQTT filter; USER_PLACEHOLDER stands for the user name


def device_grants(fleet: str) -> list[Grant]:
    up = [Grant(Access.WRITE, acl_pattern(ch, fleet=fleet)) for ch in Channel if ch.spec.direction is Direction.UP]
    down = [Grant(Access.READ, acl_pattern(ch, fleet=fleet)) for ch in Channel if ch.spec.direction is Direction.DOWN]
    # artifact chunks are fleet-wide and content-addressed: read-only, so no device can plant or clear one
    fanout = Grant(Access.READ, f"{artifacts_root(fleet)}/#")
    return [*up, *down, Grant(Access.READ, trust_topic(fleet)), fanout]


def cloud_grants(fleet: str) -> list[Grant]:
    return [Grant(Access.READWRITE, f"{fleet_root(fleet)}/#")]


def grants_for(username: str | None, fleet: str, cloud_user: str = CLOUD_USER) -> Sequence[Grant]:
    """The grants a broker user holds: the cloud's for `cloud_user`, a device's for anyone else named,
    none for an anonymous client. Mosquitto gets the same split as `user` and `pattern` lines."""
    if not username:
        return ()
    return _fleet_grants(fleet, username == cloud_user)


@lru_cache(maxsize=64)
def _fleet_grants(fleet: str, cloud: bool) -> tuple[Grant, ...]:
    # the embedded broker asks on every PUBLISH and SUBSCRIBE: build the (immutable) grants once per fleet
    return tuple(cloud_grants(fleet) if cloud else device_grants(fleet))


def render_mosquitto_acl(fleet: str, cloud_user: str) -> str:
    lines = [
        f"# EdgeFleet fleet {fleet}: written by `edgefleet broker-config`; anything not granted is denied",
        f"user {cloud_user}",
        *(f"topic {g.access.value} {g.topic}" for g in cloud_grants(fleet)),
        "",
        "# every device: its own upward channels out; its own downward channels, the fleet's trust and the",
        "# fleet's artifact chunks in",
        *(f"pattern {g.access.value} {g.topic}" for g in device_grants(fleet)),
    ]
    return "\n".join(lines) + "\n"


def is_allowed(grants: Sequence[Grant], username: str, access: Access, topic: str) -> bool:
    """Whether `username` may `access` `topic` (a topic name, or a filter being subscribed to).

    A subscription filter is allowed only when a grant's filter covers it level by level: a device
    subscribing to `.../dev/+/desired` matches no grant naming its own id, so it is refused."""
    if not username or any(c in username for c in "+#/"):
        return False  # never substitute a wildcard or a level into a pattern
    for grant in grants:
        if not grant.access.covers(access):
            continue
        allowed = grant.topic.replace(USER_PLACEHOLDER, username)
        if _filter_covers(allowed, topic):
            return True
    return False


def _filter_covers(allowed: str, wanted: str) -> bool:
    if "+" not in wanted and "#" not in wanted:
        return topic_matches(allowed, wanted)
    a_levels, w_levels = allowed.split("/"), wanted.split("/")
    for i, level in enumerate(w_levels):
        if i >= len(a_levels):
            return False
        if a_levels[i] == "#":
            return True
        if a_levels[i] != "+" and a_levels[i] != level:
            return False
    return len(a_levels) == len(w_levels) or (len(a_levels) == len(w_levels) + 1 and a_levels[-1] == "#")
