"""An asyncio event loop running in its own daemon thread, for code on other threads to hand work to.

The simulator's agents, their MQTT clients and the fan-out clients all live on such a loop, while the
caller's thread (a test, the CLI, a benchmark) waits on results with ordinary blocking calls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

__all__ = ["LoopThread"]


class LoopThread:
    def __init__(self, name: str = "edgefleet-sim-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(_quiet_lost_links)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def run(self, coro: Awaitable[T], timeout_s: float | None = None) -> T:
        """Run a coroutine on the loop and wait for its result (from any thread but the loop's own)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)  # type: ignore[arg-type]

    def call(self, fn: Callable[[], T], timeout_s: float | None = None) -> T:
        """Run a plain function on the loop's thread and wait for its result."""

        async def call() -> T:
            return fn()

        return self.run(call(), timeout_s)

    @property
    def on_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # let whatever is still pending (cancelled tasks) finish its cleanup before the loop closes
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def _quiet_lost_links(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """gmqtt's read loop can trip over a socket that was just aborted (a simulated network fault) and leave
    an AttributeError in a task nobody awaits; the link is gone either way and the transport reconnects."""
    exc = context.get("exception")
    if isinstance(exc, AttributeError) and "is_closing" in str(exc):
        log.debug("ignored: %s", context.get("message"))
        return
    loop.default_exception_handler(context)
