"""Time, behind a Protocol so tests can move it by hand.

Two readings, on purpose: wall time (ms since the epoch) for what goes on the wire and for manifest
expiry, and monotonic time (s) for timeouts, which must not jump when NTP sets the clock of a device
that booted without a real-time clock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Instant:
    wall_ms: int
    mono_s: float


class Clock(Protocol):
    def now(self) -> Instant: ...


class SystemClock:
    def now(self) -> Instant:
        return Instant(int(time.time() * 1000), time.monotonic())


class ManualClock:
    """A clock that moves only when told to (thread-safe)."""

    def __init__(self, wall_ms: int | None = None, mono_s: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self._wall_ms = int(time.time() * 1000) if wall_ms is None else wall_ms
        self._mono_s = mono_s

    def now(self) -> Instant:
        with self._lock:
            return Instant(self._wall_ms, self._mono_s)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._wall_ms += int(seconds * 1000)
            self._mono_s += seconds
