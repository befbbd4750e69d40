"""A background thread that calls `tick()` every `interval_s`, first at once, surviving a failed tick.

The cloud's periodic workers (the refresher, the rollout controller) subclass it: a database hiccup must
not end their work for good, and `stop()` must return promptly."""

from __future__ import annotations

import logging
import threading
from typing import Any, Self

log = logging.getLogger(__name__)


class Periodic:
    name = "edgefleet-periodic"
    interval_s: float

    def tick(self) -> Any:
        raise NotImplementedError

    def start(self) -> Self:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        stop, thread = getattr(self, "_stop", None), getattr(self, "_thread", None)
        if stop is None or thread is None:
            return
        stop.set()
        thread.join(10)
        self._thread = None

    def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("%s: tick failed; trying again in %.0f s", self.name, self.interval_s)
            if self._stop.wait(self.interval_s):
                return
