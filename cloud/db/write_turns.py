"""First come, first served turns at SQLite's write lock for the threads of one process.

SQLite's own busy handler does not queue: a waiting writer sleeps and polls (up to 100 ms between tries),
and a writer that commits and begins again at once (ingestion, batch after batch) wins nearly every time.
At 10,000 devices the ingestion workers held the lock back to back and the periodic tasks (controller,
refresher, alerts) waited out the whole busy timeout and failed with "database is locked". Taking a
ticket here before BEGIN IMMEDIATE makes the process's writers go in the order they asked; the busy handler
is then left with only other processes (e.g. the console API's) to wait for.
"""

from __future__ import annotations

import threading
import time


class WriteTurnTimeout(Exception):
    """No turn within the timeout: the writers ahead of this one held the lock that long."""


class WriteTurns:
    """A ticket lock: `acquire` waits until every earlier ticket has been served (or given up)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0  # the next ticket handed out
        self._serving = 0  # the ticket whose holder may write
        self._abandoned: set[int] = set()  # tickets whose waiters timed out: skipped when reached

    def acquire(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            ticket = self._next
            self._next += 1
            while self._serving != ticket:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    if self._serving == ticket:  # served as the wait ran out
                        break
                    self._abandoned.add(ticket)
                    raise WriteTurnTimeout(f"no write turn within {timeout_s:g}s")

    def release(self) -> None:
        with self._cond:
            self._serving += 1
            while self._serving in self._abandoned:
                self._abandoned.discard(self._serving)
                self._serving += 1
            self._cond.notify_all()
