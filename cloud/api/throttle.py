"""A cap on refused attempts per client on the public enrollment route.

Tokens carry 256 random bits, so guessing is hopeless; what a flood of wrong tokens can do is fill the
audit log and keep the database busy. After `limit` refusals within `window_s` a client address is
answered 429 (with Retry-After) without touching the database or the audit log until its oldest refusal
leaves the window. Memory is bounded: at most `max_clients` addresses are remembered, the least recently
refused forgotten first. Per process: behind several workers each keeps its own count.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class RefusalThrottle:
    def __init__(
        self,
        limit: int = 10,
        window_s: float = 60.0,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self._clock = clock
        self._refusals: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after_s(self, client: str) -> int:
        """0 if client may try now, else the whole seconds until it may."""
        with self._lock:
            times = self._recent(client)
            if times is None or len(times) < self.limit:
                return 0
            return max(1, math.ceil(times[0] + self.window_s - self._clock()))

    def note_refusal(self, client: str) -> None:
        with self._lock:
            times = self._recent(client)
            if times is None:
                times = self._refusals[client] = deque(maxlen=self.limit)
            times.append(self._clock())
            self._refusals.move_to_end(client)
            while len(self._refusals) > self.max_clients:
                self._refusals.popitem(last=False)

    def _recent(self, client: str) -> deque[float] | None:
        times = self._refusals.get(client)
        if times is None:
            return None
        horizon = self._clock() - self.window_s
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._refusals[client]
            return None
        return times
