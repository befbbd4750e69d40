"""Faults a scenario injects inside a simulated device, through `simulator.host.DeviceHooks`.

* Disk full: `FullDiskStore` wraps the device's model store; while the device's disk is full it refuses to
  write model bytes (start a download, write a chunk, commit one among the models) with ENOSPC, as a data
  partition with a few kilobytes left would. The journal (a few hundred bytes) still saves. The agent's
  executor turns the error into `Aborted`: the update fails with "No space left on device" as its
  reported reason and the serving model is untouched.
* Clock skew: `SkewedClock` moves the device's wall clock by a signed offset (its monotonic clock, which
  timeouts use, is untouched, as NTP leaves it). Signed statements are checked against the wall clock, so
  a clock ahead of the assignment's validity (7 days by default) refuses it as expired, and the cloud
  refuses the device's messages stamped more than 5 minutes in its future (README "Trust").
* What the device told the cloud went wrong: `EventTap` wraps its transport and keeps the last error of
  each lifecycle event it publishes (refusals are events only, not part of the reported state), so the
  report can give a reason even when the cloud never heard it (a skewed clock's events are refused). It
  also shows the sample batches the device sends to `FaultHooks.on_samples` (simulator.labels: delayed
  labels for the sampled predictions).

`FaultHooks` holds all of it per device id and survives an agent's crash and restart (the state dir does
too): a restarted agent gets the same clock, the same disk, a new tap on the same record.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterable

from edge_agent.clock import Clock, Instant
from edge_agent.store import ModelStore
from edge_agent.transport import ConnectHandler, MessageHandler, SubscribedHandler, Transport
from edge_agent.update.journal import Journal
from protocols.v1 import messages_pb2 as pb

__all__ = ["EventTap", "FaultHooks", "FullDiskStore", "SkewedClock"]


class SkewedClock:
    """The system clock with its wall reading moved by offset_s (settable at any time)."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self.offset_s = offset_s

    def now(self) -> Instant:
        return Instant(int((time.time() + self.offset_s) * 1000), time.monotonic())


class Disk:
    """Whether a device's disk is full (shared by the stores of its successive agents)."""

    def __init__(self) -> None:
        self.full = False
        self.refusals = 0


class FullDiskStore:
    """A ModelStore that refuses to write model bytes while its disk is full."""

    def __init__(self, inner: ModelStore, disk: Disk) -> None:
        self._inner, self._disk = inner, disk

    def _check(self, what: str) -> None:
        if self._disk.full:
            self._disk.refusals += 1
            raise OSError(errno.ENOSPC, f"No space left on device ({what})")

    def load_journal(self) -> Journal | None:
        return self._inner.load_journal()

    def save_journal(self, journal: Journal) -> None:
        self._inner.save_journal(journal)

    def begin_download(self, sha256: str, size_bytes: int) -> None:
        self._check(f"cannot reserve {size_bytes} bytes for the download")
        self._inner.begin_download(sha256, size_bytes)

    def write_chunk(self, sha256: str, index: int, offset: int, data: bytes) -> None:
        self._check(f"cannot write chunk {index}")
        self._inner.write_chunk(sha256, index, offset, data)

    def received_chunks(self, sha256: str) -> set[int]:
        return self._inner.received_chunks(sha256)

    def has_download(self, sha256: str) -> bool:
        return self._inner.has_download(sha256)

    def discard_download(self, sha256: str) -> None:
        self._inner.discard_download(sha256)

    def commit_download(self, sha256: str) -> None:
        self._check("cannot keep the downloaded model")
        self._inner.commit_download(sha256)

    def read_model(self, sha256: str) -> bytes:
        return self._inner.read_model(sha256)

    def read_download(self, sha256: str) -> bytes:
        return self._inner.read_download(sha256)

    def has_model(self, sha256: str) -> bool:
        return self._inner.has_model(sha256)

    def prune_models(self, keep: Iterable[str]) -> None:
        self._inner.prune_models(keep)


class EventTap:
    """A Transport that passes everything through and notes the error of each lifecycle event published."""

    def __init__(self, inner: Transport, record: dict[str, str], device_id: str,
                 on_samples: Callable[[str, pb.SampleBatch], None] | None = None) -> None:  # fmt: skip
        self._inner, self._record, self._device_id = inner, record, device_id
        self._on_samples = on_samples

    @property
    def connected(self) -> bool:
        return self._inner.connected

    def start(self) -> None:
        self._inner.start()

    def stop(self) -> None:
        self._inner.stop()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._inner.wait_connected(timeout_s)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if topic.endswith("/events"):
            event = pb.LifecycleEvent()
            event.ParseFromString(payload)
            for one in (event, *event.batch):  # an agent batches events for a cloud that reads batches
                if one.HasField("error") and one.error.code:
                    self._record[self._device_id] = f"{one.error.code}: {one.error.message}"
        elif self._on_samples is not None and topic.endswith("/samples"):
            batch = pb.SampleBatch()
            batch.ParseFromString(payload)
            self._on_samples(self._device_id, batch)
        self._inner.publish(topic, payload, qos, retain)

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self._inner.subscribe(topic_filter, qos)

    def unsubscribe(self, topic_filter: str) -> None:
        self._inner.unsubscribe(topic_filter)

    def set_message_handler(self, handler: MessageHandler) -> None:
        self._inner.set_message_handler(handler)

    def set_connect_handler(self, handler: ConnectHandler) -> None:
        self._inner.set_connect_handler(handler)

    def set_subscribed_handler(self, handler: SubscribedHandler) -> None:
        self._inner.set_subscribed_handler(handler)


class FaultHooks:
    """The simulator.host.DeviceHooks of a scenario: each device's clock, disk and last reported error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clocks: dict[str, SkewedClock] = {}
        self.disks: dict[str, Disk] = {}
        self.last_errors: dict[str, str] = {}  # device -> "code: message" of the last error event it sent
        self.on_samples: Callable[[str, pb.SampleBatch], None] | None = None  # set before the devices start

    def clock(self, device_id: str) -> Clock | None:
        with self._lock:
            return self.clocks.setdefault(device_id, SkewedClock())

    def store(self, device_id: str, store: ModelStore) -> ModelStore:
        with self._lock:
            return FullDiskStore(store, self.disks.setdefault(device_id, Disk()))

    def transport(self, device_id: str, transport: Transport) -> Transport:
        return EventTap(transport, self.last_errors, device_id, self.on_samples)

    def skew(self, device_id: str, offset_s: float) -> None:
        self.clock(device_id)
        self.clocks[device_id].offset_s = offset_s

    def fill_disk(self, device_id: str, full: bool = True) -> None:
        with self._lock:
            self.disks.setdefault(device_id, Disk()).full = full
