"""UpdateSlots: at most `limit` devices of a host take a desired state in at once; the rest wait in order,
a newer desired state replaces a waiting one, a slot frees when its device has answered the generation and
left the update states, or after hold_max_s, or when the device stops."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from edge_agent.transport import MemoryBroker, MemoryTransport
from protocols.v1 import messages_pb2 as pb
from simulator.update_slots import CHECK_S, UpdateSlots

ACTIVE, DOWNLOADING = pb.UPDATE_STATE_ACTIVE, pb.UPDATE_STATE_DOWNLOADING


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _desired(generation: int) -> bytes:
    return pb.DesiredState(device_id="d", generation=generation).SerializeToString()


class Devices:
    """What each device's agent says (update state, answered generation), and what it was handed."""

    def __init__(self) -> None:
        self.status: dict[str, tuple[int, int]] = {}
        self.handed: list[tuple[str, int]] = []

    def reader(self, device_id: str):  # type: ignore[no-untyped-def]
        self.status.setdefault(device_id, (ACTIVE, 0))
        return lambda: self.status[device_id]

    def offer(self, slots: UpdateSlots, device_id: str, generation: int) -> None:
        def deliver() -> None:
            self.handed.append((device_id, generation))
            self.status[device_id] = (DOWNLOADING, generation)  # the agent starts on it

        slots.offer(device_id, _desired(generation), self.reader(device_id), deliver)


def _settle(loop: asyncio.AbstractEventLoop, checks: int = 3) -> None:
    loop.run_until_complete(asyncio.sleep(CHECK_S * checks))


def test_at_most_limit_devices_are_handed_a_desired_state_and_the_rest_follow_in_order(loop) -> None:  # type: ignore[no-untyped-def]
    slots, devices = UpdateSlots(loop, limit=2), Devices()
    for device_id in ("a", "b", "c", "d"):
        devices.offer(slots, device_id, 1)
    assert devices.handed == [("a", 1), ("b", 1)]
    assert (slots.taken, slots.queued, slots.waited) == (2, 2, 2)
    _settle(loop)
    assert devices.handed == [("a", 1), ("b", 1)]  # both still downloading: nobody else gets in
    devices.status["b"] = (ACTIVE, 1)
    _settle(loop)
    assert devices.handed == [("a", 1), ("b", 1), ("c", 1)]  # b's slot went to the first waiting
    devices.status["a"] = (ACTIVE, 1)
    devices.status["c"] = (pb.UPDATE_STATE_FAILED, 1)  # a failed update frees its slot too
    _settle(loop)
    assert devices.handed[-1] == ("d", 1) and slots.queued == 0


def test_a_report_of_an_older_generation_keeps_the_slot(loop) -> None:  # type: ignore[no-untyped-def]
    slots, devices = UpdateSlots(loop, limit=1), Devices()
    devices.offer(slots, "a", 5)
    devices.offer(slots, "b", 1)
    devices.status["a"] = (ACTIVE, 4)  # its last report answers the previous generation: not done yet
    _settle(loop)
    assert devices.handed == [("a", 5)]
    devices.status["a"] = (ACTIVE, 5)
    _settle(loop)
    assert devices.handed == [("a", 5), ("b", 1)]


def test_a_newer_desired_state_replaces_a_waiting_one(loop) -> None:  # type: ignore[no-untyped-def]
    slots, devices = UpdateSlots(loop, limit=1), Devices()
    devices.offer(slots, "a", 1)
    devices.offer(slots, "b", 1)
    devices.offer(slots, "b", 2)
    devices.status["a"] = (ACTIVE, 1)
    _settle(loop)
    assert devices.handed == [("a", 1), ("b", 2)]  # b's first never reached it


def test_a_device_holding_a_slot_gets_its_next_desired_state_at_once(loop) -> None:  # type: ignore[no-untyped-def]
    slots, devices = UpdateSlots(loop, limit=1), Devices()
    devices.offer(slots, "a", 1)
    devices.offer(slots, "a", 2)  # superseded mid-update: the agent must hear of it now
    assert devices.handed == [("a", 1), ("a", 2)]
    devices.status["a"] = (ACTIVE, 1)
    devices.offer(slots, "b", 1)
    _settle(loop)
    assert devices.handed[-1] == ("a", 2)  # a answered 1, not 2: still holds the slot


def test_a_slot_is_freed_after_hold_max_s_or_when_its_device_stops(loop) -> None:  # type: ignore[no-untyped-def]
    slots, devices = UpdateSlots(loop, limit=1, hold_max_s=CHECK_S * 3), Devices()
    devices.offer(slots, "a", 1)  # never answers (a cut link, a refused message)
    devices.offer(slots, "b", 1)
    devices.offer(slots, "c", 1)
    _settle(loop, checks=6)
    assert devices.handed[:2] == [("a", 1), ("b", 1)]
    slots.forget("b")  # b crashed: its slot goes to c at once
    assert devices.handed[-1] == ("c", 1)
    devices.offer(slots, "d", 1)
    slots.forget("d")  # d crashed while waiting: nothing is handed to it later
    devices.status["c"] = (ACTIVE, 1)
    _settle(loop)
    assert ("d", 1) not in devices.handed and slots.queued == 0


def test_only_desired_states_wait_and_no_limit_leaves_the_transport_alone(loop) -> None:  # type: ignore[no-untyped-def]
    broker = MemoryBroker()
    inner = MemoryTransport(broker)
    assert UpdateSlots(loop, limit=0).transport("a", inner, lambda: (ACTIVE, 0)) is inner
    with pytest.raises(ValueError, match="0 \\(no limit\\) or more"):
        UpdateSlots(loop, limit=-1)

    slots = UpdateSlots(loop, limit=1)
    slots.offer("other", _desired(1), lambda: (DOWNLOADING, 1), lambda: None)  # the one slot is taken
    got: list[str] = []
    wrapped = slots.transport("a", inner, lambda: (ACTIVE, 0))
    wrapped.set_message_handler(lambda topic, _payload: got.append(topic))
    wrapped.subscribe("ef/v1/f/#")
    wrapped.start()
    for channel in ("trust", "dev/a/cmd", "dev/a/desired", "art/abc/manifest"):
        broker.publish(f"ef/v1/f/{channel}", _desired(1), retain=False)
    assert got == ["ef/v1/f/trust", "ef/v1/f/dev/a/cmd", "ef/v1/f/art/abc/manifest"]
    assert slots.queued == 1
    wrapped.stop()  # the device stops: what waited for it is dropped
    assert slots.queued == 0
