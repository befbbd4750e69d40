"""cloud.periodic: a tick at once, then every interval or as soon as woken (no sooner than min_gap_s after
the previous tick), and a prompt stop."""

from __future__ import annotations

import threading
import time

from cloud.periodic import Periodic


class Counting(Periodic):
    name = "test-periodic"

    def __init__(self, interval_s: float, min_gap_s: float = 0.0) -> None:
        self.interval_s, self.min_gap_s = interval_s, min_gap_s
        self.ticks: list[float] = []
        self.ticked = threading.Condition()

    def tick(self) -> None:
        with self.ticked:
            self.ticks.append(time.monotonic())
            self.ticked.notify_all()

    def wait_ticks(self, n: int, timeout_s: float = 5.0) -> bool:
        with self.ticked:
            return self.ticked.wait_for(lambda: len(self.ticks) >= n, timeout_s)


def test_wake_ticks_now_instead_of_at_the_end_of_the_interval() -> None:
    periodic = Counting(interval_s=60.0).start()
    try:
        assert periodic.wait_ticks(1)
        woken = time.monotonic()
        periodic.wake()
        assert periodic.wait_ticks(2, timeout_s=5.0), "a woken controller waited for its 60 s interval"
        assert periodic.ticks[1] - woken < 5.0
    finally:
        started = time.monotonic()
        periodic.stop()
        assert time.monotonic() - started < 5.0


def test_a_stream_of_wake_ups_costs_at_most_one_tick_per_min_gap() -> None:
    periodic = Counting(interval_s=60.0, min_gap_s=0.25).start()
    try:
        assert periodic.wait_ticks(1)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            periodic.wake()
            time.sleep(0.001)
    finally:
        periodic.stop()
    gaps = [b - a for a, b in zip(periodic.ticks, periodic.ticks[1:], strict=False)]
    assert 2 <= len(periodic.ticks) <= 6, periodic.ticks  # about 1 s / 0.25 s, not ~1000
    assert min(gaps) >= 0.24


def test_wake_before_start_and_after_stop_does_nothing() -> None:
    periodic = Counting(interval_s=60.0)
    periodic.wake()
    periodic.start()
    assert periodic.wait_ticks(1)
    periodic.stop()
    periodic.wake()
    time.sleep(0.1)
    assert len(periodic.ticks) == 1


def test_an_urgent_wake_does_not_wait_out_min_gap() -> None:
    # an open wave's windows just stored: its gates may breach now, not after the gap woken ticks keep
    periodic = Counting(interval_s=60.0, min_gap_s=60.0).start()
    try:
        assert periodic.wait_ticks(1)
        periodic.wake()  # an ordinary wake-up: the next tick waits out the 60 s gap...
        time.sleep(0.1)
        assert len(periodic.ticks) == 1
        periodic.wake(urgent=True)  # ...which an urgent one ends
        assert periodic.wait_ticks(2, timeout_s=10.0), "an urgent wake-up waited out the 60 s gap"
        periodic.wake()  # and only that once: ordinary wake-ups keep the gap again
        time.sleep(0.2)
        assert len(periodic.ticks) == 2
    finally:
        started = time.monotonic()
        periodic.stop()  # also promptly while it waits out a gap
        assert time.monotonic() - started < 5.0


def test_a_stream_of_urgent_wake_ups_costs_at_most_two_ticks_per_min_gap() -> None:
    # a large open wave (or a device in it sending windows on purpose) wakes the controller urgently with
    # every ingestion batch: the first cuts the gap short, the rest wait it out, not a tick each
    periodic = Counting(interval_s=60.0, min_gap_s=0.25).start()
    try:
        assert periodic.wait_ticks(1)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            periodic.wake(urgent=True)
            time.sleep(0.001)
    finally:
        periodic.stop()
    assert 2 <= len(periodic.ticks) <= 11, len(periodic.ticks)  # about 2 per 0.25 s, not ~1000
