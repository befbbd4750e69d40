"""CPU share and resident memory of this process, for telemetry windows (Linux /proc; zero elsewhere)."""

from __future__ import annotations

import os
import threading
import time


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class CpuMeter:
    """CPU time used per wall time since the previous reading, in percent of one core."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = (time.monotonic(), time.process_time())

    def percent(self) -> float:
        now = (time.monotonic(), time.process_time())
        with self._lock:
            (wall0, cpu0), self._last = self._last, now
        wall = now[0] - wall0
        return 0.0 if wall <= 0 else max(0.0, 100.0 * (now[1] - cpu0) / wall)
