"""The test cache's keys and locks, shared by the roots the arm64 and systemd tests build once and keep."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path


def cache_key(inputs: object) -> str:
    """A short key naming what a cached root was built from: a change of any input builds a new one."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def cache_locked(cache: Path, name: str) -> Iterator[None]:
    """Held while one process builds or installs into `cache` (other test workers, other runs wait)."""
    with (cache / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
