"""Short-lived answers for the console API's hottest reads, and what empties them.

A console or dashboard polls the same few lists; at 100 concurrent clients each GET costing a database
transaction put p99 past a second on SQLite. `ReadCache` keeps an answer for `ttl_s` (a second for lists, two
for API token records) and is single-flight: concurrent misses of one key share one load, so 100
clients arriving together cost one query. A value in the last quarter of its TTL is reloaded in the background
while it is still served (refresh ahead), so a busy key never expires under its readers. A cache of 0 s
keeps nothing and shares nothing (the setting's "off").

Staleness is bounded two ways. A write through this process (any successful request that is not
GET/HEAD/OPTIONS, API or console) empties the list cache as its response starts, i.e. after its commit,
so a client reads its own writes; a load that began before that point is not kept (the generation counter). Writes made
elsewhere (the ingestor, the rollout controller, another cloud process, the CLI on the database) show after
at most `ttl_s`, or `ttl_s` + `stale_s` while a reload is slow: an expired value whose reload is under way is
still served for up to `stale_s` past its TTL. A reload slower than the refresh-ahead quarter (the machine
starved, the database busy with ingestion) otherwise let the value expire under its readers, who all waited for
it together: with 200 devices reporting, 100-300 requests in every 5 s waited 0.3-1 s for a reload of the
device list or of the token record (the console API's p99 at 100 clients).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

V = TypeVar("V")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# In the last quarter of its TTL a value is reloaded behind the answer: without it, every TTL all the clients
# of a busy key waited for the reload together (one stall a second, the p99 at 100 concurrent clients)
REFRESH_SHARE = 0.25


class ReadCache(Generic[V]):
    """key -> value for `ttl_s`, at most `max_entries` keys, loads shared between concurrent callers."""

    def __init__(self, ttl_s: float, *, max_entries: int = 256, stale_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.ttl_s, self.max_entries, self.stale_s, self._clock = ttl_s, max_entries, stale_s, clock
        self._values: dict[Hashable, tuple[float, V]] = {}  # key -> (expires at, value)
        self._loading: dict[Hashable, asyncio.Task[V]] = {}
        self._generation = 0  # bumped by forget/clear: a load started before is not kept
        self.loads = 0  # how many loads ran (tests and benchmarks read it)

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    async def get(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        if not self.enabled:
            self.loads += 1
            return await load()
        hit = self._values.get(key)
        now = self._clock()
        if hit is not None and hit[0] > now:
            if self._refresh_due(hit[0], now):  # reload behind the answer, do not wait for it
                self._loading_task(key, load)
            return hit[1]
        if hit is not None and self._stale_usable(key, hit[0], now):
            return hit[1]
        # shielded: a caller that goes away (client disconnect) does not cancel the others' shared load
        return await asyncio.shield(self._loading_task(key, load))

    def _loading_task(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> asyncio.Task[V]:
        task = self._loading.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(self._load(key, load, self._generation))
            task.add_done_callback(_retrieve)
            self._loading[key] = task
        return task

    def peek(self, key: Hashable) -> V | None:
        """The value kept for key if still fresh (or expired within the grace while its reload runs), else None;
        never loads (the fast lane's look-up). None too when it is due for its refresh and none is under way:
        that request goes to `get`, which starts it."""
        hit = self._values.get(key)
        now = self._clock()
        if hit is None:
            return None
        if hit[0] <= now:
            return hit[1] if self._stale_usable(key, hit[0], now) else None
        return hit[1] if not self._refresh_due(hit[0], now) or key in self._loading else None

    def _refresh_due(self, expires: float, now: float) -> bool:
        return expires - now < self.ttl_s * REFRESH_SHARE

    def _stale_usable(self, key: Hashable, expires: float, now: float) -> bool:
        """An expired value may still answer while its reload is under way, up to stale_s past its TTL."""
        return key in self._loading and now < expires + self.stale_s

    async def _load(self, key: Hashable, load: Callable[[], Awaitable[V]], generation: int) -> V:
        try:
            self.loads += 1
            value = await load()
            if generation == self._generation:
                self._keep(key, value)
            return value
        finally:
            self._loading.pop(key, None)

    def _keep(self, key: Hashable, value: V) -> None:
        now = self._clock()
        if len(self._values) >= self.max_entries:
            self._values = {k: v for k, v in self._values.items() if v[0] > now}
        # a key already kept is replaced (a refresh); a new one only if there is room, else served without keeping
        if key in self._values or len(self._values) < self.max_entries:
            self._values[key] = (now + self.ttl_s, value)

    def forget(self, key: Hashable) -> None:
        self._generation += 1
        self._values.pop(key, None)

    def clear(self) -> None:
        self._generation += 1
        self._values.clear()


def _retrieve(task: asyncio.Task[Any]) -> None:
    # every waiter may have gone (cancelled) before a failed load ended: mark its error as seen
    if not task.cancelled():
        task.exception()


class ForgetReadsOnWrite:
    """ASGI middleware: after a request that may write (not GET/HEAD/OPTIONS) and succeeded the list cache is
    emptied, as its response starts (its transaction has committed by then) and again when it ends. A
    refused one (4xx, 5xx) changed nothing: it leaves the cache alone, so requests without a token cannot
    keep emptying it."""

    def __init__(self, app: ASGIApp, cache: ReadCache[Any]) -> None:
        self.app, self.cache = app, cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READ_METHODS:
            await self.app(scope, receive, send)
            return

        succeeded = False

        async def send_after_forgetting(message: Message) -> None:
            nonlocal succeeded
            if message["type"] == "http.response.start" and message["status"] < 400:
                succeeded = True
                self.cache.clear()
            await send(message)

        try:
            await self.app(scope, receive, send_after_forgetting)
        finally:
            if succeeded:
                self.cache.clear()
