"""A queue plus one worker thread that hands items to a callback in batches.

Transport callbacks must return quickly, so ingestion and the chunk server take messages off the
transport's thread through one of these. `submit` blocks when the queue is full: back-pressure on the
broker connection rather than dropping a QoS 1 message the broker believes delivered.

An `urgent` predicate gives some items a lane of their own, served first and in batches of their own: the
rollout gates' telemetry (the devices of an open wave) is stored within one small batch instead of behind
a burst of the whole fleet's windows (a synchronised fleet's 200 windows and their samples took ~2 s to
store at load 15, the canaries' windows among them; the gates waited for them). Each lane keeps its order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class BatchWorker(Generic[T]):
    def __init__(
        self, name: str, handle_batch: Callable[[list[T]], None], *, max_queue: int = 10_000, batch_size: int = 200,
        urgent: Callable[[T], bool] | None = None, linger_s: float = 0.0,
    ) -> None:  # fmt: skip
        self.name = name
        self._handle_batch = handle_batch
        self._batch_size = batch_size
        self._linger_s = linger_s
        self.urgent = urgent  # items it holds true for jump the queue (see the module's docstring)
        self._queue: queue.Queue[T] = queue.Queue(maxsize=max_queue)
        self._urgent: queue.Queue[T] = queue.Queue(maxsize=max_queue)
        self._ready = threading.Semaphore(0)  # one release per item put in either lane
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> None:
        urgent = self.urgent
        (self._urgent if urgent is not None and urgent(item) else self._queue).put(item)
        self._ready.release()

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks + self._urgent.unfinished_tasks

    def drain(self, timeout_s: float) -> bool:
        """Wait until every submitted item has been handled; False if timeout_s passed first."""
        deadline = time.monotonic() + timeout_s
        while self.pending:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Handle what is queued (up to timeout_s), then end the thread."""
        if self._thread is None:
            return
        self.drain(timeout_s)
        self._stop.set()
        self._thread.join(timeout_s)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._ready.acquire(timeout=0.1):
                continue
            # the lane the batch comes from: the urgent one whenever it holds anything
            lane = self._urgent if not self._urgent.empty() else self._queue
            batch = [lane.get_nowait()]
            deadline = time.monotonic() + (self._linger_s if lane is self._queue else 0.0)
            while len(batch) < self._batch_size:
                if not lane.empty() and self._ready.acquire(blocking=False):
                    batch.append(lane.get_nowait())
                    continue
                wait_s = deadline - time.monotonic()
                if wait_s <= 0 or not self._ready.acquire(timeout=wait_s):
                    break
                if lane.empty():  # the item that came is urgent: hand its permit back and serve it next
                    self._ready.release()
                    break
                batch.append(lane.get_nowait())
            try:
                self._handle_batch(batch)
            except Exception:  # the handler logs its own failures; this keeps the thread alive regardless
                log.exception("%s: batch of %d failed", self.name, len(batch))
            finally:
                for _ in batch:
                    lane.task_done()


class MessageConsumer:
    """Base of the cloud's MQTT consumers: messages arrive on the transport's thread through `submit` and
    are handled on `self.worker`'s thread. Subclasses create `self.worker` in their constructor."""

    worker: BatchWorker[tuple[str, bytes]]

    def start(self) -> None:
        self.worker.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.worker.stop(timeout_s)

    def submit(self, topic: str, payload: bytes) -> None:
        """Transport-thread entry point: queue the message and return."""
        self.worker.submit((topic, payload))

    def drain(self, timeout_s: float) -> bool:
        return self.worker.drain(timeout_s)


@dataclass
class Counters:
    """Thread-safe counters for a worker's stats; subclasses declare the int fields."""

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {k: v for k, v in vars(self).items() if k != "lock"}
