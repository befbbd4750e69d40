"""A background thread that calls `tick()` every `interval_s`, first at once, surviving a failed tick.

The cloud's periodic workers (the refresher, the rollout controller) subclass it: a database hiccup must
not end their work for good, and `stop()` must return promptly. `wake()` asks for a tick now rather than at
the end of the interval (the rollout controller is woken when the telemetry its gates need is stored); woken
ticks come at most every `min_gap_s`, so a stream of wake-ups costs a bounded number of ticks. `wake(urgent=True)`
does not wait out that gap, once per gap: for wake-ups whose news cannot wait (an open wave's own windows);
a stream of them costs at most two ticks per `min_gap_s`."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Self

log = logging.getLogger(__name__)


class Periodic:
    name = "edgefleet-periodic"
    interval_s: float
    min_gap_s: float = 0.2

    def tick(self) -> Any:
        raise NotImplementedError

    def wake(self, urgent: bool = False) -> None:
        """Tick as soon as the current tick (if any) ends and min_gap_s has passed (urgent: without waiting for
        min_gap_s); a no-op when not started. Cheap and thread-safe: callers on hot paths (ingestion) may call it
        on every batch."""
        wake = getattr(self, "_wake", None)
        if wake is not None:
            if urgent:
                self._urgent.set()
            wake.set()

    def wake_urgently(self) -> None:
        self.wake(urgent=True)

    def start(self) -> Self:
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._urgent = threading.Event()  # ends the wait for min_gap_s
        self._urgent_tick_s = -math.inf  # when an urgent wake-up last cut that wait short
        self._thread: threading.Thread | None = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        stop, thread = getattr(self, "_stop", None), getattr(self, "_thread", None)
        if stop is None or thread is None:
            return
        stop.set()
        self._wake.set()
        self._urgent.set()
        thread.join(10)
        self._thread = None

    def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.tick()
            except Exception:
                log.exception("%s: tick failed; trying again in %.0f s", self.name, self.interval_s)
            self._wake.wait(self.interval_s)
            self._wake.clear()  # wake-ups during the tick or the wait are all served by the next tick
            min_gap_s = min(self.min_gap_s, self.interval_s)
            gap = min_gap_s - (time.monotonic() - started)
            if gap > 0 and self._urgent.wait(gap):
                # one urgent tick per min_gap_s: with a large open wave every ingestion batch holds some of its
                # windows, and back-to-back ticks would cost the core a thread (a device in the wave could
                # also send windows to that end); the first news is judged at once, the rest a gap later
                now = time.monotonic()
                if now - self._urgent_tick_s < min_gap_s:
                    self._stop.wait(max(0.0, min_gap_s - (now - started)))
                else:
                    self._urgent_tick_s = now
            self._urgent.clear()  # served by the tick that follows now
            if self._stop.is_set():
                return
