"""The refusal throttle on its own, on a clock the test moves."""

from __future__ import annotations

from cloud.api.throttle import RefusalThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_is_held_off_after_the_limit_until_its_oldest_refusal_leaves_the_window() -> None:
    clock = Clock()
    throttle = RefusalThrottle(limit=3, window_s=60, clock=clock)
    for _ in range(3):
        assert throttle.retry_after_s("10.0.0.1") == 0
        throttle.note_refusal("10.0.0.1")
        clock.now += 10
    assert throttle.retry_after_s("10.0.0.1") == 30  # oldest at 1000, now 1030, window 60
    assert throttle.retry_after_s("10.0.0.2") == 0  # others are not held off
    clock.now += 30
    assert throttle.retry_after_s("10.0.0.1") == 0


def test_memory_is_bounded_by_forgetting_the_least_recently_refused() -> None:
    throttle = RefusalThrottle(limit=1, window_s=60, max_clients=100, clock=Clock())
    for i in range(1000):
        throttle.note_refusal(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle._refusals) == 100
    assert throttle.retry_after_s("10.0.3.231") > 0  # the last one is remembered
    assert throttle.retry_after_s("10.0.0.0") == 0  # the first is forgotten
