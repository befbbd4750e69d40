"""The wave planner: sizes per strategy, a stable but per-rollout order, and devices skipped with a reason."""

from __future__ import annotations

import pytest

from cloud.rollout.waves import (
    Candidate,
    Requirements,
    SkipReason,
    Strategy,
    StrategyKind,
    plan_waves,
    stable_order,
    wave_sizes,
)

IDS = [f"pi-{i:03d}" for i in range(200)]


@pytest.mark.parametrize(
    ("strategy", "total", "sizes"),
    [
        (Strategy(), 200, [200]),
        (Strategy(StrategyKind.CANARY, canary=5), 200, [5, 195]),
        (Strategy(StrategyKind.CANARY, canary=0.05), 200, [10, 190]),
        (Strategy(StrategyKind.CANARY, canary=0.05), 3, [1, 2]),  # a share rounds up to at least one device
        (Strategy(StrategyKind.CANARY, canary=10), 4, [4]),  # a canary as big as the fleet is one wave
        (Strategy(StrategyKind.WAVES, first_wave=10, growth=2), 200, [10, 20, 40, 80, 50]),
        (Strategy(StrategyKind.WAVES, first_wave=0.1, growth=1), 25, [3, 3, 3, 3, 3, 3, 3, 3, 1]),
        (Strategy(StrategyKind.WAVES, first_wave=1, growth=1.5), 6, [1, 2, 2, 1]),
        (Strategy(StrategyKind.WAVES), 0, []),
    ],
)
def test_wave_sizes_cover_every_device_once(strategy: Strategy, total: int, sizes: list[int]) -> None:
    assert wave_sizes(strategy, total) == sizes
    assert sum(sizes) == total


def test_the_order_is_stable_for_a_release_and_differs_between_releases() -> None:
    first = stable_order("r1", IDS)
    assert stable_order("r1", list(reversed(IDS))) == first  # however the ids arrived
    assert stable_order("r2", IDS) != first
    assert sorted(first) == IDS


def test_waves_partition_the_eligible_devices_in_that_order() -> None:
    plan = plan_waves("r1", [Candidate(d) for d in IDS], Strategy(StrategyKind.WAVES, first_wave=10), Requirements())
    assert [len(w) for w in plan.waves] == [10, 20, 40, 80, 50]
    assert [d for wave in plan.waves for d in wave] == stable_order("r1", IDS)
    assert plan.skipped == {} and plan.device_count == 200


def test_devices_that_cannot_run_the_release_are_skipped_with_the_reason() -> None:
    candidates = [
        Candidate("ok", runtimes=("onnxruntime",), agent_version="0.4.0"),
        Candidate("not-yet-reported"),  # no runtimes reported: assumed able; agent version unknown: too old
        Candidate("tflite-only", runtimes=("tflite",), agent_version="0.4.0"),
        Candidate("old", runtimes=("onnxruntime",), agent_version="0.3.9"),
        Candidate("newer", runtimes=("onnxruntime", "tflite"), agent_version="0.10.0"),  # 0.10 > 0.4, not a string
        Candidate("off", runtimes=("onnxruntime",), agent_version="0.4.0", online=False),
    ]
    needs = Requirements(runtimes=frozenset({"onnxruntime"}), min_agent_version="0.4")
    plan = plan_waves("r", candidates, Strategy(include_offline=False), needs)
    assert sorted(plan.waves[0]) == ["newer", "ok"]
    assert plan.skipped == {
        "not-yet-reported": SkipReason.AGENT_TOO_OLD,
        "tflite-only": SkipReason.NO_RUNTIME,
        "old": SkipReason.AGENT_TOO_OLD,
        "off": SkipReason.OFFLINE,
    }
    assert "off" in plan_waves("r", candidates, Strategy(), needs).waves[0]  # by default it waits for it


@pytest.mark.parametrize(
    "bad",
    [{"canary": 0}, {"canary": 2.5}, {"first_wave": -1}, {"growth": 0.5}, {"growth": 1000}, {"dwell_s": -1}],
)
def test_impossible_strategies_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Strategy(StrategyKind.WAVES, **bad)  # type: ignore[arg-type]
