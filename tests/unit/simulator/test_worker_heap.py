"""A simulator worker's long-lived heap is frozen (its agents are not walked by every full collection), and
its garbage collections are counted (simulator.gc_clock)."""

from __future__ import annotations

import gc
from pathlib import Path

from simulator.gc_clock import GcClock
from simulator.process_fleet import ProcessFleet


def test_gc_clock_counts_collections_and_their_time() -> None:
    clock = GcClock().install()
    try:
        gc.collect()
        stats = clock.snapshot()
    finally:
        clock.uninstall()
    assert stats["collections"][2] >= 1
    assert stats["seconds"][2] > 0
    gc.collect()
    assert clock.snapshot()["collections"] == stats["collections"]  # uninstalled: no longer counting


def test_a_started_worker_has_frozen_its_heap(tmp_path: Path) -> None:
    fleet = ProcessFleet([], workers=1, mqtt_url="mqtt://127.0.0.1:1", trust_path=Path("absent"),
                         state_root=tmp_path / "state")  # fmt: skip
    with fleet:
        (stats,) = fleet.gc_stats()
        assert stats["frozen"] > 10_000  # the imports and the host: everything alive once started
        (frozen,) = fleet.freeze_heap()
        assert frozen >= stats["frozen"]
