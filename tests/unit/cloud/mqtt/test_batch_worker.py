"""BatchWorker's linger: items that trickle in share a batch; an urgent item does not wait for it."""

from __future__ import annotations

import threading
import time

from cloud.mqtt.worker import BatchWorker


def _worker(linger_s: float) -> tuple[BatchWorker[int], list[list[int]]]:
    batches: list[list[int]] = []
    worker: BatchWorker[int] = BatchWorker(
        "test-batches", batches.append, batch_size=100, urgent=lambda item: item < 0, linger_s=linger_s
    )
    worker.start()
    return worker, batches


def _trickle(worker: BatchWorker[int], items: range, gap_s: float) -> None:
    for item in items:
        worker.submit(item)
        time.sleep(gap_s)


def test_items_that_trickle_in_share_a_batch() -> None:
    worker, batches = _worker(linger_s=0.5)
    try:
        _trickle(worker, range(10), 0.01)  # 10 ms apart: without a linger, a batch each
        assert worker.drain(5)
    finally:
        worker.stop()
    assert [item for batch in batches for item in batch] == list(range(10))  # in order, none lost
    assert len(batches) <= 2, batches


def test_an_urgent_item_ends_the_linger() -> None:
    handled: dict[int, float] = {}
    done = threading.Event()

    def handle(batch: list[int]) -> None:
        for item in batch:
            handled[item] = time.monotonic()
        if -1 in batch:
            done.set()

    worker: BatchWorker[int] = BatchWorker("test-urgent", handle, urgent=lambda item: item < 0, linger_s=5.0)
    worker.start()
    try:
        worker.submit(1)  # an ordinary batch starts lingering (5 s)
        time.sleep(0.05)
        sent = time.monotonic()
        worker.submit(-1)
        assert done.wait(2), "the urgent item waited for the ordinary batch's linger"
        assert handled[-1] - sent < 1.0
        assert worker.drain(2)
        assert 1 in handled
    finally:
        worker.stop()
