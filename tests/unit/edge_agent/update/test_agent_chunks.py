"""The chunk window: what to ask for, when to ask again, when to give up."""

from __future__ import annotations

from edge_agent.update.chunks import ChunkPolicy, ChunkTracker


def test_the_window_fills_as_chunks_arrive() -> None:
    tracker = ChunkTracker(5, ChunkPolicy(window=2, timeout_s=1.0, max_retries=1))
    assert tracker.next_batch(0.0) == [0, 1]
    assert tracker.next_batch(0.0) == []
    assert tracker.mark_received(1) and not tracker.mark_received(1)
    assert tracker.next_batch(0.0) == [2]
    for index in (0, 2, 3, 4):
        tracker.mark_received(index)
    assert tracker.complete and tracker.missing() == []


def test_deadlines_expire_and_retries_run_out() -> None:
    tracker = ChunkTracker(2, ChunkPolicy(window=2, timeout_s=1.0, max_retries=1))
    tracker.next_batch(10.0)
    assert tracker.expire(10.5) == ([], True)
    assert tracker.expire(11.0) == ([0, 1], True)
    assert tracker.next_batch(11.0) == [0, 1]
    late, ok = tracker.expire(12.0)
    assert late == [0, 1] and not ok


def test_renew_resets_deadlines_without_a_retry() -> None:
    tracker = ChunkTracker(3, ChunkPolicy(window=2, timeout_s=1.0, max_retries=0))
    tracker.next_batch(0.0)
    assert tracker.renew(5.0) == [0, 1]
    assert tracker.expire(5.5) == ([], True)
    assert tracker.retries == {}


def test_fanout_chunks_are_awaited_then_asked_for_without_a_retry_counted() -> None:
    tracker = ChunkTracker(4, ChunkPolicy(window=8, timeout_s=1.0, max_retries=0))
    tracker.expect_fanout(0.0)
    assert tracker.next_batch(0.0) == []  # nothing is requested while the fan-out may still bring it
    tracker.mark_received(0)
    tracker.fanout_progress(0.8)  # chunks keep coming: the rest get more time
    assert tracker.expire(1.5) == ([], True)
    late, ok = tracker.expire(1.8)
    assert late == [1, 2, 3] and ok and tracker.retries == {}  # with max_retries 0 a counted retry would fail
    assert tracker.next_batch(1.8) == [1, 2, 3]  # now asked for on the device's own topics
    assert tracker.expected == set()


def test_renew_after_a_reconnect_asks_again_only_for_requested_chunks() -> None:
    tracker = ChunkTracker(4, ChunkPolicy(window=1, timeout_s=1.0, max_retries=1))
    assert tracker.next_batch(0.0) == [0]
    tracker.expect_fanout(0.0)  # the others come from the fan-out
    assert tracker.renew(2.0) == [0]
    assert tracker.expire(2.5) == ([], True)
