"""A full spool drops samples first, then telemetry, then events; oldest first within a kind; per-kind
drop counts survive a restart; a spool file of an older agent (no priority column) still opens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edge_agent.spool import Spool

DEV = "ef/v1/f/dev/d1/"


def test_a_full_spool_drops_the_oldest_of_the_lowest_priority_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite", max_messages=4)
    spool.add(DEV + "events", b"e1")
    spool.add(DEV + "samples", b"s1")
    spool.add(DEV + "telemetry", b"t1")
    spool.add(DEV + "samples", b"s2")
    spool.add(DEV + "telemetry", b"t2")  # full: s1 goes
    spool.add(DEV + "reported", b"r1")  # s2 goes
    spool.add(DEV + "events", b"e2")  # t1 goes
    assert [m.payload for m in spool.after(0, 10)] == [b"e1", b"t2", b"r1", b"e2"]
    spool.add(DEV + "samples", b"s3")  # the lowest itself: it goes at once
    assert [m.payload for m in spool.after(0, 10)] == [b"e1", b"t2", b"r1", b"e2"]
    assert spool.drops() == {"samples": 3, "telemetry": 1, "events": 0}
    spool.add(DEV + "events", b"e3")
    spool.add(DEV + "presence", b"p1")  # only events left to drop: t2, then the oldest event
    assert [m.payload for m in spool.after(0, 10)] == [b"r1", b"e2", b"e3", b"p1"]
    assert spool.drops() == {"samples": 3, "telemetry": 2, "events": 1} and spool.dropped == 6
    spool.close()
    assert Spool(tmp_path / "s.sqlite", max_messages=4).drops() == {"samples": 3, "telemetry": 2, "events": 1}


def test_an_older_spool_file_opens_and_its_messages_count_as_events(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,"
        " qos INTEGER NOT NULL, retain INTEGER NOT NULL);"
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO counters VALUES ('dropped', 5);"
        f"INSERT INTO messages (topic, payload, qos, retain) VALUES ('{DEV}samples', x'01', 1, 0);"
    )
    db.commit()
    db.close()
    spool = Spool(path, max_messages=1)
    spool.add(DEV + "samples", b"new")  # the old message counts as an event: the new sample goes
    assert [m.payload for m in spool.after(0, 10)] == [b"\x01"]
    assert spool.drops()["samples"] == 1 and spool.dropped == 6
