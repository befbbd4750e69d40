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
