"""`UpdateSlots`: at most N of a host's simulated devices take a new desired state in at once; the others'
wait their turn, as if the message were still on its way.

Why: a real device has a CPU of its own, a simulated one shares its host's event loop with thousands. With
every desired state of a rollout handed over at once, every device's update advances in lockstep with all
the others and takes as long as the whole rollout (at 10,000 devices on 2 cores, ~30 s each instead of
milliseconds). The agent then reports its progress every `report_hold_s` and sends its lifecycle events in
several batches, as a real device on a slow link would: 7.5 upward messages per device instead of 2, which
the cloud and the broker must carry, though no real fleet would send them. With slots, each update runs as
fast as the loop allows from the moment its device's desired state is handed over; the queue is the
simulator's, and what a device does with its message is unchanged.

Only `desired` messages wait (a device's trust chain, commands, manifests and chunks pass at once); a newer
desired state for a waiting device replaces its older one (the topic is a retained latest value). A device
holds its slot until its reported state answers the generation it was handed and is no longer mid-update
(downloading, verifying, loading, self-test), or for `hold_max_s` at most (an update stuck on a cut link, a
desired state the agent refused without answering). Everything runs on the host's event loop.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.transport import ConnectHandler, MessageHandler, SubscribedHandler, Transport
from protocols.topics import Channel
from protocols.v1 import messages_pb2 as pb

__all__ = ["SlottedTransport", "UpdateSlots"]

UPDATE_SLOTS = 100  # per host: ~0.25 s of a loop's work at ~2.5 ms per update, well inside report_hold_s
HOLD_MAX_S = 30.0
CHECK_S = 0.02  # how often the holders' states are read while any slot is taken
_MID_UPDATE = frozenset({pb.UPDATE_STATE_DOWNLOADING, pb.UPDATE_STATE_VERIFYING, pb.UPDATE_STATE_LOADING,
                         pb.UPDATE_STATE_SELF_TEST})  # fmt: skip
_DESIRED_SUFFIX = "/" + Channel.DESIRED.value

# what a device's agent says it is doing: (update state, the desired generation its report answers)
StatusReader = Callable[[], tuple[int, int]]


@dataclass
class _Holder:
    generation: int
    since_s: float
    status: StatusReader


class UpdateSlots:
    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = UPDATE_SLOTS, hold_max_s: float = HOLD_MAX_S):
        """limit: devices updating at once (0: no limit, every desired state handed over on arrival)."""
        if limit < 0:
            raise ValueError(f"update slots must be 0 (no limit) or more, got {limit}")
        self.limit = limit
        self._loop = loop
        self._hold_max_s = hold_max_s
        self._holders: dict[str, _Holder] = {}
        self._waiting: collections.OrderedDict[str, tuple[int, StatusReader, Callable[[], None]]] = (
            collections.OrderedDict()
        )
        self._check: asyncio.TimerHandle | None = None
        self.waited = 0  # desired states that waited for a slot, for reports and tests
        self.peak = 0  # the most slots taken at once

    @property
    def taken(self) -> int:
        return len(self._holders)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def transport(self, device_id: str, inner: Transport, status: StatusReader) -> Transport:
        """inner, with its device's desired states handed over through these slots."""
        return inner if self.limit == 0 else SlottedTransport(self, device_id, inner, status)

    def offer(self, device_id: str, payload: bytes, status: StatusReader, deliver: Callable[[], None]) -> None:
        """A desired state arrived for device_id: deliver() now if it holds or gets a slot, else when one frees."""
        generation = _generation(payload)
        if device_id in self._holders or len(self._holders) < self.limit:
            self._take(device_id, generation, status)
            deliver()
            return
        self.waited += 1
        self._waiting.pop(device_id, None)  # a newer one replaces it, and queues behind the others
        self._waiting[device_id] = (generation, status, deliver)
        self._arm()

    def forget(self, device_id: str) -> None:
        """The device stopped (crash, shutdown): its slot is free and what waited for it is dropped (a
        restarted agent subscribes again and the broker hands it the retained desired state)."""
        self._waiting.pop(device_id, None)
        if self._holders.pop(device_id, None) is not None:
            self._admit()

    def _take(self, device_id: str, generation: int, status: StatusReader) -> None:
        held = self._holders.get(device_id)
        if held is None or generation > held.generation:
            self._holders[device_id] = _Holder(generation, time.monotonic(), status)
            self.peak = max(self.peak, len(self._holders))
        self._arm()

    def _arm(self) -> None:
        if self._check is None and (self._holders or self._waiting):
            self._check = self._loop.call_later(CHECK_S, self._on_check)

    def _on_check(self) -> None:
        self._check = None
        now = time.monotonic()
        done = [device_id for device_id, held in self._holders.items() if _finished(held, now, self._hold_max_s)]
        for device_id in done:
            del self._holders[device_id]
        self._admit()
        self._arm()

    def _admit(self) -> None:
        while self._waiting and len(self._holders) < self.limit:
            device_id, (generation, status, deliver) = self._waiting.popitem(last=False)
            self._take(device_id, generation, status)
            deliver()


def _finished(held: _Holder, now_s: float, hold_max_s: float) -> bool:
    if now_s - held.since_s >= hold_max_s:
        return True
    state, answered = held.status()
    return answered >= held.generation and state not in _MID_UPDATE


def _generation(payload: bytes) -> int:
    try:
        return pb.DesiredState.FromString(payload).generation
    except Exception:  # noqa: BLE001  (a malformed message: the agent refuses it; it waits like any other)
        return 0


class SlottedTransport:
    """A device's Transport whose incoming desired states go through the host's `UpdateSlots`."""

    def __init__(self, slots: UpdateSlots, device_id: str, inner: Transport, status: StatusReader) -> None:
        self._slots = slots
        self._device_id = device_id
        self._inner = inner
        self._status = status
        self._handler: MessageHandler = lambda _t, _p: None

    def set_message_handler(self, handler: MessageHandler) -> None:
        self._handler = handler
        self._inner.set_message_handler(self._on_message)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if not topic.endswith(_DESIRED_SUFFIX):
            self._handler(topic, payload)
            return
        handler = self._handler
        self._slots.offer(self._device_id, payload, self._status, lambda: handler(topic, payload))

    # -- the rest is the inner transport's ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._inner.connected

    def start(self) -> None:
        self._inner.start()

    def stop(self) -> None:
        self._slots.forget(self._device_id)
        self._inner.stop()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._inner.wait_connected(timeout_s)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self._inner.publish(topic, payload, qos, retain)

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self._inner.subscribe(topic_filter, qos)

    def unsubscribe(self, topic_filter: str) -> None:
        self._inner.unsubscribe(topic_filter)

    def set_connect_handler(self, handler: ConnectHandler) -> None:
        self._inner.set_connect_handler(handler)

    def set_subscribed_handler(self, handler: SubscribedHandler) -> None:
        self._inner.set_subscribed_handler(handler)

    def __getattr__(self, name: str) -> object:  # what else a caller reads of the inner one (cork, spool_drops)
        return getattr(self._inner, name)
