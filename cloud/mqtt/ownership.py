"""Which cloud process answers a device's chunk requests when every process hears every request.

With an MQTT 5 shared subscription (`share_group`) the broker hands each request to one member and this is
not needed. Without one (a broker that lacks them, such as NATS's MQTT gateway, or processes started
without a group) every process subscribed to the fleet receives every request; each then answers only
the devices it owns. Membership lives in the database (`CloudMember`: every process writes its row every
`interval_s`, rows older than `ttl_s` are dead) and ownership is rendezvous hashing over the live members
(`owner_of`, pure): every process computes the same owner from the same member list, and when a member
joins or leaves only its share of the devices moves. While views differ (a few seconds after a change) a
request may be answered twice or not at all; the device asks again after its timeout, so nothing is lost.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from sqlalchemy import Engine, delete
from sqlmodel import Session, col, select

from cloud.db.tables import CloudMember
from cloud.periodic import Periodic
from cloud.types import ClockMs, now_ms

log = logging.getLogger(__name__)


def owner_of(device_id: str, members: Sequence[str]) -> str:
    """The member that answers device_id: the highest hash of (member, device) wins (rendezvous hashing)."""
    if not members:
        raise ValueError("no members to choose from")
    return max(members, key=lambda member: hashlib.sha256(f"{member}\n{device_id}".encode()).digest())


class Ownership(Periodic):
    name = "edgefleet-ownership"

    def __init__(
        self,
        engine: Engine,
        *,
        fleet: str,
        member_id: str,
        interval_s: float = 5.0,
        ttl_s: float = 20.0,
        clock: ClockMs = now_ms,
    ) -> None:
        self.engine = engine
        self.fleet = fleet
        self.member_id = member_id
        self.interval_s = interval_s
        self.ttl_ms = int(ttl_s * 1000)
        self.clock = clock
        self.members: tuple[str, ...] = ()  # the live members at the last tick, sorted

    def tick(self) -> tuple[str, ...]:
        """Say we are alive and read who else is."""
        now = self.clock()
        with Session(self.engine) as session:
            session.merge(CloudMember(member_id=self.member_id, fleet=self.fleet, seen_at_ms=now))
            session.commit()
            live = session.exec(
                select(CloudMember.member_id).where(
                    CloudMember.fleet == self.fleet, col(CloudMember.seen_at_ms) >= now - self.ttl_ms
                )
            ).all()
        members = tuple(sorted(set(live) | {self.member_id}))
        if members != self.members:
            log.info("chunk requests are split between %d cloud process(es): %s", len(members), ", ".join(members))
        self.members = members
        return members

    def owns(self, device_id: str) -> bool:
        """Whether this process answers device_id; before the first tick (or alone), every device."""
        members = self.members
        if len(members) <= 1:
            return True
        return owner_of(device_id, members) == self.member_id

    def stop(self) -> None:
        """Leave at once, so the others take our devices over at their next tick rather than after ttl_s."""
        super().stop()
        try:
            with Session(self.engine) as session:
                session.execute(delete(CloudMember).where(col(CloudMember.member_id) == self.member_id))
                session.commit()
        except Exception:  # the row then expires on its own
            log.exception("could not leave the cloud membership")
