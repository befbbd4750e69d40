"""SQLite writers of one process take the write lock in the order they asked. SQLite's busy handler polls
instead of queueing, so a writer that commits and begins again at once (ingestion at 10,000 devices) kept
the lock from a periodic task for the whole busy timeout: "database is locked" (old code: after 30 s)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from cloud.db.engine import make_engine
from cloud.db.write_turns import WriteTurns, WriteTurnTimeout

BATCH_S = 0.2  # how long the busy writer holds the lock per transaction


def test_a_writer_gets_its_turn_beside_a_writer_that_never_pauses(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'turns.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (who TEXT)"))
    stop = threading.Event()

    def busy_writer() -> None:  # batch after batch, beginning again the moment it commits
        while not stop.is_set():
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES ('ingest')"))
                time.sleep(BATCH_S)

    writers = [threading.Thread(target=busy_writer) for _ in range(2)]
    for thread in writers:
        thread.start()
    waits = []
    try:
        time.sleep(BATCH_S)
        for _ in range(5):  # a periodic task's ticks
            started = time.monotonic()
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES ('tick')"))
            waits.append(time.monotonic() - started)
    finally:
        stop.set()
        for thread in writers:
            thread.join()
        engine.dispose()
    # its turn comes after the batches already waiting (two writers: at most two batches, plus a loaded machine)
    assert max(waits) < 10 * BATCH_S, waits


def test_a_turn_ends_with_its_transaction_however_it_ends(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'turns.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    with pytest.raises(ZeroDivisionError), engine.begin() as conn:  # rolled back
        conn.execute(text("INSERT INTO t VALUES (1)"))
        1 / 0  # noqa: B018
    conn = engine.connect()
    conn.execute(text("INSERT INTO t VALUES (2)"))  # begun, never committed: closed, so returned to the pool
    conn.close()
    done = threading.Event()

    def write() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (3)"))
        done.set()

    threading.Thread(target=write).start()
    assert done.wait(5), "a turn was not given back"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT x FROM t")).scalars().all() == [3]
    engine.dispose()


def test_tickets_are_served_in_order_and_a_waiter_that_gives_up_is_skipped() -> None:
    turns = WriteTurns()
    turns.acquire(1)
    with pytest.raises(WriteTurnTimeout):
        turns.acquire(0.05)  # gives up while the first holds its turn
    order: list[int] = []
    threads = []
    for n in range(3):
        thread = threading.Thread(target=lambda n=n: (turns.acquire(5), order.append(n), turns.release()))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # so they ask in this order
    turns.release()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2]
