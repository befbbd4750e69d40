"""Ingestion of lifecycle events an agent batched (`LifecycleEvent.batch`, capability `event_batch`): every event
is its own row by (device_id, seq), a redelivery stores nothing twice, an old agent's single event still
counts, and a batch that cannot be true is refused whole."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from support.enrollment import enroll

from cloud.db.tables import EventRecord
from cloud.monitoring import Ingestor
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb
from protocols.validation import FUTURE_SKEW_MS, MAX_EVENT_BATCH

NOW_MS = 1_700_000_000_000
DEVICE = "dev-1"


@pytest.fixture
def ingestor(any_engine: Engine) -> Ingestor:
    enroll(any_engine, DEVICE)
    return Ingestor(any_engine, clock=lambda: NOW_MS)


def event(seq: int, kind: pb.EventKind, **fields: object) -> pb.LifecycleEvent:
    fields = {"ts_ms": NOW_MS - 1000 + seq, "deployment_id": "dep-1", **fields}
    return pb.LifecycleEvent(seq=seq, kind=kind, **fields)  # type: ignore[arg-type]


def message(first: pb.LifecycleEvent, *more: pb.LifecycleEvent) -> tuple[str, bytes]:
    first.schema_version, first.device_id = 1, DEVICE
    first.batch.extend(more)
    return device_topic(DEVICE, Channel.EVENTS), first.SerializeToString()


def stored(engine: Engine) -> list[tuple[int, str, str | None]]:
    with Session(engine) as session:
        rows = session.exec(select(EventRecord).order_by(EventRecord.seq)).all()  # type: ignore[arg-type]
        return [(r.seq, r.kind, r.error_code) for r in rows]


def test_every_event_of_a_batch_is_stored_once_by_its_seq(any_engine: Engine, ingestor: Ingestor) -> None:
    batch = message(
        event(2, pb.EVENT_KIND_DOWNLOADED),
        event(3, pb.EVENT_KIND_VERIFIED),
        event(4, pb.EVENT_KIND_SELF_TEST_FAILED, error=pb.ErrorInfo(code="self_test", message="3 of 5 wrong")),
    )
    single = message(event(1, pb.EVENT_KIND_UPDATE_STARTED))  # an old agent's, or a batch of one
    ingestor.process([single, batch])
    ingestor.process([batch])  # a QoS 1 redelivery
    assert stored(any_engine) == [(1, "update_started", None), (2, "downloaded", None), (3, "verified", None),
                                  (4, "self_test_failed", "self_test")]  # fmt: skip
    stats = ingestor.stats.snapshot()
    assert (stats["stored"], stats["duplicates"], stats["implausible"]) == (4, 3, 0)
    with Session(any_engine) as session:
        assert {r.device_id for r in session.exec(select(EventRecord)).all()} == {DEVICE}


@pytest.mark.parametrize(
    "batch",
    [
        [event(2, pb.EVENT_KIND_VERIFIED, batch=[event(3, pb.EVENT_KIND_ACTIVATED)])],  # nested
        [event(2, pb.EVENT_KIND_VERIFIED, ts_ms=NOW_MS + FUTURE_SKEW_MS + 1)],  # dated in the future
        [event(2 + n, pb.EVENT_KIND_ERROR) for n in range(MAX_EVENT_BATCH + 1)],  # too many
    ],
    ids=["nested", "future", "too-many"],
)
def test_a_batch_that_cannot_be_true_is_refused_whole(
    any_engine: Engine, ingestor: Ingestor, batch: list[pb.LifecycleEvent]
) -> None:
    ingestor.process([message(event(1, pb.EVENT_KIND_DOWNLOADED), *batch)])
    assert stored(any_engine) == []
    assert ingestor.stats.snapshot()["implausible"] == 1


def test_a_batched_event_naming_another_device_is_refused_whole(any_engine: Engine, ingestor: Ingestor) -> None:
    """A device with broker credentials writes only its own topic; an entry naming another device is a forgery
    (the lead's attacker pass: it was stored as the sender's)."""
    enroll(any_engine, "dev-2")
    forged = event(3, pb.EVENT_KIND_ERROR, device_id="dev-2")
    ingestor.process([message(event(2, pb.EVENT_KIND_DOWNLOADED), event(4, pb.EVENT_KIND_VERIFIED, device_id=DEVICE),
                              forged)])  # fmt: skip
    assert stored(any_engine) == []
    assert ingestor.stats.snapshot()["malformed"] == 1
