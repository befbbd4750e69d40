"""Type aliases and small interfaces shared across the cloud package."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

JSONDict = dict[str, Any]
ClockMs = Callable[[], int]  # wall-clock time in epoch milliseconds; injected so tests can fix it


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Publisher(Protocol):
    """The one thing delivery needs from a Transport: publishing (edge_agent.transport.Transport has it)."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None: ...
