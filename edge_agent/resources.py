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


MALLOC_ARENAS = 2  # also MALLOC_ARENA_MAX in the systemd unit (edge_agent/bundle_files)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (mallopt M_ARENA_MAX); True if it took.

    glibc gives each thread that allocates its own arena (up to 8 per core), and each keeps freed memory
    resident; an agent has ~10 threads (gRPC, paho, runtime, jobs) that allocate little, so 2 arenas cost
    nothing in speed and save resident memory. Call it before starting threads. No-op off glibc."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False  # set by the unit (or the user): glibc already read it at start
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: libc's, where Python links glibc
    except (OSError, AttributeError):
        return False
    m_arena_max = -8  # glibc's malloc.h
    return bool(mallopt(m_arena_max, arenas))


def use_builtin_hashes() -> bool:
    """Make hashlib use Python's own SHA-2 code instead of OpenSSL's; True if it took (hashlib not imported yet).

    The agent hashes little (a manifest, a model of a few MB per update, chunk ids), and loading OpenSSL's
    libcrypto for it through `_hashlib` costs ~3.4 MB resident for the process's lifetime (~0.5 MB over
    what `ssl` loads anyway on an mqtts:// device). Python's sha256 is slower (~120 vs ~540 MB/s here),
    which a model's one check per update does not notice. Call it before anything imports hashlib."""
    import sys

    if "hashlib" in sys.modules:
        return False
    sys.modules.setdefault("_hashlib", None)  # type: ignore[arg-type]  # None: `import _hashlib` fails
    return sys.modules["_hashlib"] is None
