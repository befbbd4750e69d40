"""One contract for every Transport adapter: the in-memory one, and paho and the simulator's asyncio
adapter (gmqtt, many clients on one event loop) on Mosquitto and on the embedded broker. Code above the
transport is unit-tested on the memory adapter, so it must behave like the real ones in everything listed
here."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator

import pytest
from support import Inbox

from edge_agent.transport import MemoryBroker, MemoryTransport, Transport
from simulator.loop_thread import LoopThread
from simulator.loop_transport import LoopTransport

pytestmark = pytest.mark.integration

NewTransport = Callable[[], tuple[Transport, Inbox]]


_numbers = itertools.count()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    with LoopThread() as loop:
        yield loop


@pytest.fixture(params=["memory", "paho-mosquitto", "paho-embedded", "loop-mosquitto", "loop-embedded"])
def new_transport(request: pytest.FixtureRequest, make_transport) -> Iterator[NewTransport]:
    """new_transport() -> (transport, inbox), not yet started."""
    if request.param == "memory":
        memory_broker = MemoryBroker()

        def new_memory() -> tuple[Transport, Inbox]:
            transport, inbox = MemoryTransport(memory_broker), Inbox()
            transport.set_message_handler(inbox)
            return transport, inbox

        yield new_memory
        return
    adapter, _, broker_kind = request.param.partition("-")
    broker = request.getfixturevalue(broker_kind + "_broker")
    if adapter == "paho":
        yield lambda: make_transport(broker=broker, connect=False)
        return
    loop = request.getfixturevalue("loop_thread").loop
    made: list[LoopTransport] = []

    def new_loop_transport() -> tuple[Transport, Inbox]:
        transport = LoopTransport(broker.url, f"loop-{next(_numbers)}", loop=loop, protocol=broker.mqtt_protocol,
                                  reconnect_min_s=0.1, reconnect_max_s=1.0)  # fmt: skip
        inbox = Inbox()
        transport.set_message_handler(inbox)
        made.append(transport)
        return transport, inbox

    yield new_loop_transport
    for transport in made:
        transport.stop()


def started(pair: tuple[Transport, Inbox]) -> tuple[Transport, Inbox]:
    pair[0].start()
    assert pair[0].wait_connected(10)
    return pair


def test_connects_and_calls_the_connect_handler_once(new_transport: NewTransport) -> None:
    transport, _ = new_transport()
    calls: list[str] = []
    transport.set_connect_handler(lambda: calls.append("connected"))
    assert not transport.connected
    transport.start()
    assert transport.wait_connected(10) and transport.connected
    assert calls == ["connected"]
    transport.stop()
    assert not transport.connected


def test_delivers_what_matches_the_filters(new_transport: NewTransport) -> None:
    sub, inbox = new_transport()
    sub.subscribe("ef/v1/dev/+/telemetry")
    sub.subscribe("ef/v1/art/#")
    started((sub, inbox))
    pub, _ = started(new_transport())
    pub.publish("ef/v1/dev/d1/telemetry", b"t1")
    pub.publish("ef/v1/dev/d1/events", b"not subscribed")
    pub.publish("ef/v1/art/abc/0", b"chunk")
    pub.publish("ef/v1/dev/d2/telemetry", b"t2")
    assert inbox.wait_for(3)
    assert sorted(inbox.messages) == [
        ("ef/v1/art/abc/0", b"chunk"),
        ("ef/v1/dev/d1/telemetry", b"t1"),
        ("ef/v1/dev/d2/telemetry", b"t2"),
    ]


def test_retained_state_reaches_later_subscribers_until_cleared(new_transport: NewTransport) -> None:
    witness, seen = new_transport()
    witness.subscribe("ef/v1/dev/+/desired")
    started((witness, seen))
    pub, _ = started(new_transport())
    pub.publish("ef/v1/dev/d1/desired", b"v1", retain=True)
    pub.publish("ef/v1/dev/d2/desired", b"v1", retain=True)
    pub.publish("ef/v1/dev/d2/desired", b"", retain=True)
    # a broker may fan messages out after acknowledging them (amqtt does); wait until they are out, so the
    # subscriber below meets settled retained state rather than messages still in flight
    assert seen.wait_for(3)
    sub, inbox = new_transport()
    sub.subscribe("ef/v1/dev/+/desired")
    sub.subscribe("ef/v1/dev/d1/cmd")
    started((sub, inbox))
    assert inbox.wait_for(1)
    pub.publish("ef/v1/dev/d1/cmd", b"sentinel")  # comes after any retained message still on its way
    assert inbox.wait_for(2)
    assert inbox.messages == [("ef/v1/dev/d1/desired", b"v1"), ("ef/v1/dev/d1/cmd", b"sentinel")]


def test_qos1_published_before_connecting_is_delivered(new_transport: NewTransport) -> None:
    sub, inbox = new_transport()
    sub.subscribe("ef/early")
    started((sub, inbox))
    pub, _ = new_transport()
    pub.publish("ef/early", b"queued", qos=1)
    started((pub, Inbox()))
    assert inbox.wait_for(1)
    assert inbox.messages == [("ef/early", b"queued")]


def test_unsubscribed_filters_stop_delivering(new_transport: NewTransport) -> None:
    sub, inbox = new_transport()
    sub.subscribe("ef/v1/art/#")
    sub.subscribe("ef/v1/dev/d1/cmd")
    started((sub, inbox))
    pub, _ = started(new_transport())
    pub.publish("ef/v1/art/abc/0", b"before")
    assert inbox.wait_for(1)
    sub.unsubscribe("ef/v1/art/#")
    sub.unsubscribe("ef/v1/never/subscribed")  # a no-op, not an error
    # a fence on sub's own connection: once it comes back, the broker has handled the UNSUBSCRIBE sent before it
    sub.publish("ef/v1/dev/d1/cmd", b"fence")
    assert inbox.wait_for(2)
    pub.publish("ef/v1/art/abc/1", b"after")
    pub.publish("ef/v1/dev/d1/cmd", b"sentinel")  # still subscribed: arrives after anything sent before it
    assert inbox.wait_for(3)
    assert inbox.messages == [
        ("ef/v1/art/abc/0", b"before"),
        ("ef/v1/dev/d1/cmd", b"fence"),
        ("ef/v1/dev/d1/cmd", b"sentinel"),
    ]


def test_a_filter_added_by_a_retained_message_at_connect_is_subscribed(new_transport: NewTransport) -> None:
    """An agent subscribes to an artifact's chunks as soon as its retained desired state arrives, which can be
    while the transport is still restoring its subscriptions."""
    pub, _ = started(new_transport())
    pub.publish("ef/v1/dev/d1/desired", b"state", retain=True)
    sub, inbox = new_transport()

    def on_message(topic: str, payload: bytes) -> None:
        inbox(topic, payload)
        if topic == "ef/v1/dev/d1/desired":
            sub.subscribe("ef/v1/art/abc/+")

    sub.set_message_handler(on_message)
    sub.subscribe("ef/v1/dev/d1/desired")
    sub.subscribe("ef/v1/dev/d1/cmd")
    started((sub, inbox))
    assert inbox.wait_for(1)
    sub.publish("ef/v1/dev/d1/cmd", b"fence")  # once back, the broker has handled any SUBSCRIBE sent before it
    assert inbox.wait_for(2)
    pub.publish("ef/v1/art/abc/0", b"chunk")
    assert inbox.wait_for(3)
    assert inbox.messages == [
        ("ef/v1/dev/d1/desired", b"state"),
        ("ef/v1/dev/d1/cmd", b"fence"),
        ("ef/v1/art/abc/0", b"chunk"),
    ]
    pub.publish("ef/v1/dev/d1/desired", b"", retain=True)


def test_a_live_subscription_is_acknowledged_to_the_subscribed_handler(new_transport: NewTransport) -> None:
    """The agent's wait for fan-out chunks starts at the SUBACK, which each adapter reports: once per filter
    subscribed on a live connection, after the retained messages it brings were sent (MQTT: the SUBACK
    comes before them, and they cannot come before it). Subscriptions made offline: the connect handler."""
    pub, _ = started(new_transport())
    pub.publish("ef/v1/art/abc/0", b"chunk", retain=True)
    sub, inbox = new_transport()
    acked: list[tuple[str, bool]] = []
    done = threading.Event()
    sub.set_subscribed_handler(lambda f, granted: (acked.append((f, granted)), done.set()))
    sub.subscribe("ef/v1/dev/d1/desired")  # before connecting: restored at connect, not reported here
    started((sub, inbox))
    sub.subscribe("ef/v1/art/abc/+")
    assert done.wait(10) and inbox.wait_for(1)
    assert acked == [("ef/v1/art/abc/+", True)]
    assert inbox.messages == [("ef/v1/art/abc/0", b"chunk")]
    pub.publish("ef/v1/art/abc/0", b"", retain=True)
