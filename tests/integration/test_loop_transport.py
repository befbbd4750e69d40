"""What the simulator's asyncio MQTT adapter does beyond the shared transport contract: it steps down to
MQTT 3.1.1 for a broker that only speaks that, a dropped link fires the device's will and comes back by
itself, and many clients share one event loop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import Inbox, wait_until

from edge_agent.transport import Will
from simulator.loop_thread import LoopThread
from simulator.loop_transport import LoopTransport

pytestmark = pytest.mark.integration


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    with LoopThread() as loop:
        yield loop


def _transport(broker, loop_thread: LoopThread, client_id: str, **kwargs) -> LoopTransport:  # type: ignore[no-untyped-def]
    kwargs.setdefault("reconnect_min_s", 0.1)
    kwargs.setdefault("reconnect_max_s", 0.5)
    return LoopTransport(broker.url, client_id, loop=loop_thread.loop, **kwargs)


def test_a_broker_without_mqtt5_is_spoken_to_in_311(embedded_broker, loop_thread: LoopThread) -> None:
    transport = _transport(embedded_broker, loop_thread, "asks-for-5", protocol="5")
    transport.start()
    try:
        assert transport.wait_connected(10), transport.last_error
        assert transport.protocol == "3.1.1"
    finally:
        transport.stop()


def test_a_dropped_link_fires_the_will_and_comes_back(each_broker, loop_thread: LoopThread) -> None:
    witness = _transport(each_broker, loop_thread, "witness", protocol=each_broker.mqtt_protocol)
    seen = Inbox()
    witness.set_message_handler(seen)
    witness.subscribe("ef/v1/dev/d1/presence")
    witness.start()
    device = _transport(each_broker, loop_thread, "d1", protocol=each_broker.mqtt_protocol,
                        will=Will("ef/v1/dev/d1/presence", b"offline"))  # fmt: skip
    reconnects: list[bool] = []
    device.set_connect_handler(lambda: reconnects.append(True))
    device.start()
    try:
        assert witness.wait_connected(10) and device.wait_connected(10)
        device.drop(offline_s=0.5)
        assert seen.wait_for(1, timeout_s=10)  # the broker noticed a lost link, not a goodbye
        assert seen.messages[0] == ("ef/v1/dev/d1/presence", b"offline")
        device.publish("ef/v1/dev/d1/presence", b"back", qos=1)  # while offline: queued, sent on reconnect
        assert wait_until(lambda: len(reconnects) == 2, timeout_s=10)
        assert seen.wait_for(2, timeout_s=10)
        assert seen.messages[1] == ("ef/v1/dev/d1/presence", b"back")
    finally:
        device.stop()
        witness.stop()


def test_many_clients_share_one_loop(mosquitto_broker, loop_thread: LoopThread) -> None:
    sub = _transport(mosquitto_broker, loop_thread, "sub")
    inbox = Inbox()
    sub.set_message_handler(inbox)
    sub.subscribe("ef/many/+")
    sub.start()
    clients = [_transport(mosquitto_broker, loop_thread, f"c{n}") for n in range(60)]
    for client in clients:
        client.start()
    try:
        assert sub.wait_connected(10)
        assert all(client.wait_connected(20) for client in clients)
        for n, client in enumerate(clients):
            client.publish(f"ef/many/{n}", str(n).encode())
        assert inbox.wait_for(len(clients), timeout_s=20)
        assert sorted(int(p) for _t, p in inbox.messages) == list(range(len(clients)))
    finally:
        for client in clients:
            client.stop()
        sub.stop()


def test_the_packets_of_one_loop_turn_go_out_in_one_send(mosquitto_broker, loop_thread: LoopThread,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A thousand agents on one loop paid a system call per packet; what one turn writes goes out at once,
    in order, and a clean stop still sends what it had buffered (its DISCONNECT too: no will)."""
    import asyncio.selector_events

    witness = _transport(mosquitto_broker, loop_thread, "witness")
    seen = Inbox()
    witness.set_message_handler(seen)
    witness.subscribe("ef/burst/#")
    witness.start()
    device = _transport(mosquitto_broker, loop_thread, "burst", will=Will("ef/burst/will", b"offline"))
    device.start()
    assert witness.wait_connected(10) and device.wait_connected(10)
    client = device._client
    assert client is not None
    sockname = client._connection._transport.get_extra_info("sockname")
    sends: list[int] = []
    write = asyncio.selector_events._SelectorSocketTransport.write

    def counting(self, data):  # type: ignore[no-untyped-def]
        if self.get_extra_info("sockname") == sockname:
            sends.append(len(data))
        return write(self, data)

    monkeypatch.setattr(asyncio.selector_events._SelectorSocketTransport, "write", counting)

    def burst() -> None:  # on the loop, in one turn: as one agent's step would
        for n in range(10):  # ten: with twenty the witness missed the last, on the old code too
            device.publish(f"ef/burst/{n}", str(n).encode())

    try:
        loop_thread.loop.call_soon_threadsafe(burst)
        assert seen.wait_for(10, timeout_s=10)
        assert [int(p) for _t, p in seen.messages] == list(range(10))
        assert len(sends) == 1, sends
        loop_thread.loop.call_soon_threadsafe(lambda: (device.publish("ef/burst/last", b"last"), device.stop()))
        assert seen.wait_for(11, timeout_s=10)
        assert seen.messages[10] == ("ef/burst/last", b"last")
        assert not seen.wait_for(12, timeout_s=1.0), seen.messages[11:]  # a clean goodbye: no will
    finally:
        device.stop()
        witness.stop()
