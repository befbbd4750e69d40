"""`Spool`: the agent's upward QoS 1 messages on disk until the broker has acknowledged them.

paho keeps unacknowledged messages in memory only, so a process that dies (power cut, crash, restart for
an update) loses them. The spool is a SQLite file (the standard library's; nothing to install on a
device) holding each message from publish to PUBACK, in order. It is bounded: past `max_messages` the
oldest are dropped, counted in `dropped` (kept in the file, so it survives restarts) and logged, since a
device offline for days must not fill its disk.

Thread-safe: the agent adds from its own thread, the transport removes from its pump thread.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# what a message is worth keeping, by the channel its topic ends with: lower goes first when full
KINDS = ("samples", "telemetry", "events")
_PRIORITY = {"samples": 0, "telemetry": 1}
_EVENTS = 2  # events, reported, presence and anything else

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,
    qos INTEGER NOT NULL, retain INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('dropped', 0);
INSERT OR IGNORE INTO counters VALUES ('dropped_samples', 0);
INSERT OR IGNORE INTO counters VALUES ('dropped_telemetry', 0);
INSERT OR IGNORE INTO counters VALUES ('dropped_events', 0);
"""


def priority_of(topic: str) -> int:
    return _PRIORITY.get(topic.rpartition("/")[2], _EVENTS)


@dataclass(frozen=True)
class Spooled:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Spool:
    def __init__(self, path: Path | str, *, max_messages: int = 10_000) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        self.path = Path(path)
        self.max_messages = max_messages
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # WAL + NORMAL: a commit survives the process dying (not necessarily a power cut); one fsync per
        # checkpoint rather than per message, which a device's flash storage prefers
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
        if "priority" not in columns:  # a spool file of an older agent: its messages count as events
            self._db.execute(f"ALTER TABLE messages ADD COLUMN priority INTEGER NOT NULL DEFAULT {_EVENTS}")
        self._db.execute("CREATE INDEX IF NOT EXISTS by_priority ON messages (priority, id)")
        self._count = int(self._db.execute("SELECT count(*) FROM messages").fetchone()[0])

    def add(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Store a message; returns its id. When the spool is full, drops (and counts) the oldest message
        of the lowest priority, which may be this one."""
        with self._lock:
            self._db.execute("BEGIN")
            cursor = self._db.execute(
                "INSERT INTO messages (topic, payload, qos, retain, priority) VALUES (?, ?, ?, ?, ?)",
                (topic, payload, qos, int(retain), priority_of(topic)),
            )
            self._count += 1
            excess = self._count - self.max_messages
            if excess > 0:
                victims = self._db.execute(
                    "SELECT id, priority FROM messages ORDER BY priority, id LIMIT ?", (excess,)
                ).fetchall()
                self._db.executemany("DELETE FROM messages WHERE id = ?", [(v[0],) for v in victims])
                for priority in {v[1] for v in victims}:
                    kind = KINDS[min(max(priority, 0), _EVENTS)]
                    n = sum(1 for v in victims if v[1] == priority)
                    self._db.execute("UPDATE counters SET value = value + ? WHERE name = ?", (n, f"dropped_{kind}"))
                self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (excess,))
                self._count -= excess
            self._db.execute("COMMIT")
            row_id = int(cursor.lastrowid or 0)
        if excess > 0:
            dropped = self.dropped
            if dropped == excess or dropped % 1000 < excess:  # the first drop, then every 1000th
                log.warning("outbox spool %s full (%d messages): dropped the oldest, %d in all",
                            self.path, self.max_messages, dropped)
        return row_id

    def remove(self, message_id: int) -> None:
        """Forget a message the broker acknowledged (or one already dropped: nothing happens)."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            self._count -= cursor.rowcount

    def after(self, message_id: int, limit: int) -> list[Spooled]:
        """Up to limit messages with an id above message_id, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (message_id, limit),
            ).fetchall()
        return [Spooled(r[0], r[1], bytes(r[2]), r[3], bool(r[4])) for r in rows]

    def __contains__(self, message_id: int) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM messages WHERE id = ?", (message_id,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return self._count

    @property
    def dropped(self) -> int:
        """Messages dropped because the spool was full, over the file's lifetime."""
        with self._lock:
            return int(self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()[0])

    def drops(self) -> dict[str, int]:
        """Messages dropped because the spool was full, per kind (samples, telemetry, events)."""
        with self._lock:
            rows = self._db.execute("SELECT name, value FROM counters WHERE name LIKE 'dropped_%'").fetchall()
        return {name.removeprefix("dropped_"): int(value) for name, value in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
