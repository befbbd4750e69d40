"""cloud.heap: after start the live objects leave the collector's walk, and later garbage is still collected."""

from __future__ import annotations

import gc
import weakref

from cloud.heap import freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_startup_objects_are_frozen_and_later_cycles_still_collected() -> None:
    started = Node()
    try:
        frozen = freeze_startup_heap()
        assert frozen > 1000 and gc.get_freeze_count() == frozen
        # what was alive at start is no longer in any generation a collection walks
        assert not any(obj is started for obj in gc.get_objects())
        later = Node()
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None  # garbage made after the freeze: collected as before
    finally:
        gc.unfreeze()
