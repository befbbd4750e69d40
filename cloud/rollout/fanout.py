"""One upload per rollout: an artifact's chunks published once, retained, on the fleet-wide topics.

`ef/v1/{fleet}/art/{sha256}/{chunk_size}/{index}` (`protocols.topics.artifact_chunk_topic`) is the same for
every device that needs those bytes in that layout, so the cloud sends each chunk once whatever the size of
the fleet; devices may only read there (`cloud.identity.acl`), check every chunk against their signed
manifest, and ask on their own topics (the chunk server) only for what does not come.

Several cloud processes share one database: a `FanoutRecord` row is the claim, so one process publishes
an artifact (an insert only one wins; a claim left unpublished for `claim_timeout_ms` is taken over), and
one process clears it: `sweep` deletes the rows no open deployment needs (none of its targets still
pending or in progress, no staged rollout still to open waves) and unused for `keep_ms`, and whoever's
delete took the row empties the retained topics. A desired state names the fan-out filter only when the
chunks are retained (or being published); a device that finds nothing there still asks for every chunk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Engine, and_, delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cloud.db import RolloutState
from cloud.db.tables import ArtifactRecord, Deployment, DeploymentTarget, FanoutRecord
from cloud.mqtt.worker import Counters
from cloud.periodic import Periodic
from cloud.registry.artifacts import ArtifactStore
from cloud.rollout.records import Rollout
from cloud.rollout.status import TERMINAL
from cloud.types import ClockMs, Publisher, now_ms
from edge_agent.transport import TransportError
from protocols import SCHEMA_VERSION
from protocols.chunking import ChunkLayout
from protocols.topics import artifact_chunk_filter, artifact_chunk_topic
from protocols.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)

PUBLISH_BACKOFF_S = 5.0
_UNFINISHED = [s.value for s in RolloutState if not s.finished]


@dataclass
class FanoutStats(Counters):
    artifacts_published: int = 0
    chunks_published: int = 0
    bytes_published: int = 0
    artifacts_cleared: int = 0


class FanoutPublisher:
    def __init__(
        self,
        engine: Engine,
        store: ArtifactStore,
        publisher: Publisher,
        *,
        fleet: str,
        claim_timeout_ms: int = 60_000,
        keep_ms: int = 60_000,
        clock: ClockMs = now_ms,
    ) -> None:
        self.engine = engine
        self.store = store
        self.publisher = publisher
        self.fleet = fleet
        self.claim_timeout_ms = claim_timeout_ms
        self.keep_ms = keep_ms  # a row unused this long may be cleared: a deploy that just found it is safe
        self.clock = clock
        self.stats = FanoutStats()

    def offer(self, locations: Iterable[pb.ArtifactLocation], *, again: bool = False) -> None:
        """Make sure each location's chunks are retained (publishing those no process has) and name the
        fan-out filter in it. With again (a broker that lost its retained messages) publish regardless."""
        done: dict[tuple[str, int], bool] = {}
        for location in locations:
            key = (location.sha256, location.chunk_size)
            if key not in done:
                layout = ChunkLayout.of(location.sha256, location.size_bytes, location.chunk_size)
                done[key] = self.ensure(layout, again=again)
            if done[key]:
                location.fanout_filter = artifact_chunk_filter(location.sha256, location.chunk_size, fleet=self.fleet)

    def ensure(self, layout: ChunkLayout, *, again: bool = False) -> bool:
        """True when the layout's chunks are retained or being published by some process; publishes them
        here when this process wins the claim. False when they cannot be (the bytes are missing)."""
        now = self.clock()
        key = (self.fleet, layout.sha256, layout.chunk_size)
        with Session(self.engine) as session:
            row = session.get(FanoutRecord, key)
            if row is None:
                session.add(FanoutRecord(fleet=self.fleet, sha256=layout.sha256, chunk_size=layout.chunk_size,
                                         size_bytes=layout.size_bytes, claimed_at_ms=now, used_at_ms=now))  # fmt: skip
                try:
                    session.commit()
                except IntegrityError:
                    return True  # another process claimed it a moment ago and publishes it
            else:
                stale = not row.published_at_ms and now - row.claimed_at_ms >= self.claim_timeout_ms
                claim = update(FanoutRecord).where(_key(key))
                if again or stale:  # take it over: only one process's update matches the claim it read
                    claim = claim.where(col(FanoutRecord.claimed_at_ms) == row.claimed_at_ms)
                    claim = claim.values(claimed_at_ms=now, published_at_ms=0, used_at_ms=now)
                    won = session.execute(claim).rowcount == 1  # type: ignore[attr-defined]
                    session.commit()
                    if not won:
                        return True
                else:
                    session.execute(claim.values(used_at_ms=now))
                    session.commit()
                    return True
        return self._publish(layout, key)

    def _publish(self, layout: ChunkLayout, key: tuple[str, str, int]) -> bool:
        try:
            for index in range(layout.total_chunks):
                data = self.store.read_chunk(layout.sha256, layout.offset(index), layout.chunk_size)
                if len(data) != layout.length(index):
                    raise ValueError(f"chunk {index}: read {len(data)} bytes, expected {layout.length(index)}")
                chunk = pb.ArtifactChunk(
                    schema_version=SCHEMA_VERSION, sha256=layout.sha256, index=index,
                    total_chunks=layout.total_chunks, offset=layout.offset(index), data=data,
                )  # fmt: skip
                topic = artifact_chunk_topic(layout.sha256, layout.chunk_size, index, fleet=self.fleet)
                publish_retained(self.publisher, topic, chunk.SerializeToString())
                self.stats.add(chunks_published=1, bytes_published=len(data))
        except Exception as exc:  # the bytes are gone or the broker refuses: devices ask per device instead
            log.error("could not publish artifact %s on the fleet-wide topics: %s", layout.sha256[:12], exc)
            with Session(self.engine) as session:
                session.execute(delete(FanoutRecord).where(_key(key)))
                session.commit()
            return False
        with Session(self.engine) as session:
            session.execute(update(FanoutRecord).where(_key(key)).values(published_at_ms=self.clock()))
            session.commit()
        self.stats.add(artifacts_published=1)
        log.info("artifact %s: %d chunk(s) retained on the fleet-wide topics", layout.sha256[:12], layout.total_chunks)
        return True

    def sweep(self) -> int:
        """Clear the retained chunks that no open deployment needs any more; returns how many artifacts."""
        now = self.clock()
        with Session(self.engine) as session:
            rows = session.exec(
                select(FanoutRecord).where(
                    FanoutRecord.fleet == self.fleet,
                    col(FanoutRecord.published_at_ms) > 0,
                    col(FanoutRecord.used_at_ms) < now - self.keep_ms,
                )
            ).all()
            if not rows:
                return 0
            needed = _needed(session)
            cleared = []
            for row in rows:
                if (row.sha256, row.chunk_size) in needed:
                    continue
                key = (row.fleet, row.sha256, row.chunk_size)
                gone = delete(FanoutRecord).where(_key(key), col(FanoutRecord.used_at_ms) == row.used_at_ms)
                if session.execute(gone).rowcount == 1:  # type: ignore[attr-defined]
                    cleared.append(ChunkLayout.of(row.sha256, row.size_bytes, row.chunk_size))
            session.commit()
        for layout in cleared:  # the rows are gone first: a deploy from now on publishes them again
            for index in range(layout.total_chunks):
                topic = artifact_chunk_topic(layout.sha256, layout.chunk_size, index, fleet=self.fleet)
                publish_retained(self.publisher, topic, b"")  # MQTT: an empty retained message clears it
            log.info("artifact %s: cleared from the fleet-wide topics", layout.sha256[:12])
        self.stats.add(artifacts_cleared=len(cleared))
        return len(cleared)


class FanoutSweeper(Periodic):
    name = "edgefleet-fanout-sweeper"

    def __init__(self, fanout: FanoutPublisher, *, interval_s: float = 30.0) -> None:
        self.fanout = fanout
        self.interval_s = interval_s

    def tick(self) -> int:
        return self.fanout.sweep()


def _key(key: tuple[str, str, int]) -> ColumnElement[bool]:
    fleet, sha256, chunk_size = key
    return and_(
        col(FanoutRecord.fleet) == fleet,
        col(FanoutRecord.sha256) == sha256,
        col(FanoutRecord.chunk_size) == chunk_size,
    )


def _needed(session: Session) -> set[tuple[str, int]]:
    """(sha256, chunk size) of every artifact an open deployment may still send devices to."""
    open_targets = (
        select(ArtifactRecord.sha256, Deployment.chunk_size_bytes)
        .join(Deployment, col(Deployment.model_version_id) == col(ArtifactRecord.model_version_id))
        .join(DeploymentTarget, col(DeploymentTarget.deployment_id) == col(Deployment.id))
        .where(col(DeploymentTarget.status).not_in(TERMINAL))
        .distinct()
    )
    waves_to_open = (
        select(ArtifactRecord.sha256, Deployment.chunk_size_bytes)
        .join(Deployment, col(Deployment.model_version_id) == col(ArtifactRecord.model_version_id))
        .join(Rollout, col(Rollout.deployment_id) == col(Deployment.id))
        .where(col(Rollout.state).in_(_UNFINISHED))
        .distinct()
    )
    found = {(sha, int(size)) for sha, size in session.exec(open_targets)}
    return found | {(sha, int(size)) for sha, size in session.exec(waves_to_open)}


def publish_retained(publisher: Publisher, topic: str, payload: bytes) -> None:
    """Publish retained at QoS 1, waiting up to PUBLISH_BACKOFF_S while the client's queue is full."""
    deadline = time.monotonic() + PUBLISH_BACKOFF_S
    while True:
        try:
            return publisher.publish(topic, payload, qos=1, retain=True)
        except TransportError:
            if time.monotonic() >= deadline:  # the client's outgoing queue stays full
                raise
            time.sleep(0.05)
