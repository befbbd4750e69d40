"""`GcClock`: how many garbage collections a process ran, per generation, and the time they took (from
`gc.callbacks`), so that a benchmark can tell the collector's share of a simulated fleet's CPU.

A worker holding thousands of agents holds millions of objects; a generation-2 collection walks them all.
"""

from __future__ import annotations

import gc
import time
from typing import Any

__all__ = ["GcClock"]


class GcClock:
    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._began = 0.0

    def install(self) -> GcClock:
        gc.callbacks.append(self._on_gc)
        return self

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def snapshot(self) -> dict[str, Any]:
        """{"collections": [gen0, gen1, gen2], "seconds": [...]} so far, and how many objects are "frozen"
        (gc.freeze(): no collection walks them)."""
        return {"collections": list(self.collections), "seconds": [round(s, 4) for s in self.seconds],
                "frozen": gc.get_freeze_count()}  # fmt: skip

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        generation = info["generation"]
        self.collections[generation] += 1
        self.seconds[generation] += time.perf_counter() - self._began
