"""A token bucket per client (pure): the console's per-address limit on public paths and ingestion's budget for
watched devices' windows count with the same one."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from typing import Any


def client_address(scope: Mapping[str, Any]) -> str:
    """The address an HTTP request's per-address budgets are kept for (an ASGI scope, e.g. `request.scope`):
    its client's host, or "unknown" when the server names none (all such requests share one budget)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class ClientRate:
    """A token bucket per client address: `take(client)` spends one request, or says how long to wait."""

    def __init__(self, per_s: float, burst: int, *, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.per_s, self.burst, self.max_clients, self._clock = per_s, burst, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self.refused = 0  # 429s given (tests and benchmarks read it)

    def take(self, client: str) -> int:
        """0 and one request spent, or the whole seconds until the client may send the next one."""
        now = self._clock()
        tokens, at = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_s)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0
        else:
            wait = max(1, math.ceil((1.0 - tokens) / self.per_s))
            self.refused += 1
        self._buckets[client] = (tokens, now)  # most recently seen last
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    def keep_only(self, clients: Collection[str]) -> None:
        """Forget every client not in `clients`."""
        self._buckets = OrderedDict((c, b) for c, b in self._buckets.items() if c in clients)
