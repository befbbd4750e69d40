"""Two cloud processes ingesting at once never deadlock on PostgreSQL: a batch locks the device rows it
updates in one global order (by id), whatever order its messages arrived in.

Two ingestors get the same two devices' reports in opposite orders. Each pauses after its first flush (its
first device row locked) until the other has flushed too, or for at most PAUSE_S: with rows locked in
arrival order both hold one row and wait for the other's (PostgreSQL aborts one: "deadlock detected");
in id order the second waits on the first's row, the first goes on after the pause, and both commit.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session
from support.enrollment import enroll

from cloud.db.tables import Device
from cloud.monitoring import Ingestor
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.postgres

NOW_MS = 1_700_000_000_000
PAUSE_S = 3.0  # longer than PostgreSQL's deadlock_timeout (1 s): a deadlock is detected within the pause


def _report(device_id: str, seq: int) -> tuple[str, bytes]:
    report = pb.ReportedState(
        schema_version=1, device_id=device_id, seq=seq, ts_ms=NOW_MS - 1000 + seq, update_state=pb.UPDATE_STATE_IDLE
    )
    return device_topic(device_id, Channel.REPORTED), report.SerializeToString()


@pytest.fixture
def pause_after_first_flush() -> Iterator[threading.Barrier]:
    """Every ingestor's session waits after its first flush for the other ingestor's first flush (or PAUSE_S)."""
    both_flushed = threading.Barrier(2)

    def after_flush(session: Session, _context: Any) -> None:
        if session.info.get("paused") or threading.current_thread() is threading.main_thread():
            return  # (the test's own sessions, enrolling the devices, are not paused)
        session.info["paused"] = True
        with contextlib.suppress(threading.BrokenBarrierError):  # the other waits on a row this one holds: go on
            both_flushed.wait(PAUSE_S)

    event.listen(Session, "after_flush", after_flush)
    try:
        yield both_flushed
    finally:
        event.remove(Session, "after_flush", after_flush)


def test_two_ingestors_updating_the_same_devices_in_opposite_orders_do_not_deadlock(
    postgres_url: str, pause_after_first_flush: threading.Barrier, caplog: pytest.LogCaptureFixture
) -> None:
    from cloud.db import create_tables, make_engine

    engine: Engine = make_engine(postgres_url)
    create_tables(engine)
    try:
        enroll(engine, "dev-a", "dev-b")
        first = Ingestor(engine, clock=lambda: NOW_MS)
        second = Ingestor(engine, clock=lambda: NOW_MS)
        batches = [
            (first, [_report("dev-a", 1), _report("dev-b", 1)]),
            (second, [_report("dev-b", 2), _report("dev-a", 2)]),
        ]
        caplog.set_level(logging.WARNING, logger="cloud.monitoring.ingest")
        threads = [threading.Thread(target=ingestor.process, args=(batch,)) for ingestor, batch in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        deadlocks = [r.getMessage() for r in caplog.records if "deadlock" in r.getMessage()]
        assert deadlocks == []
        with Session(engine) as session:
            for device_id in ("dev-a", "dev-b"):
                device = session.get(Device, device_id)
                assert device is not None and device.reported_seq in (1, 2)  # both batches applied, none lost
        assert first.stats.device_updates == 2 and second.stats.device_updates == 2
    finally:
        engine.dispose()
