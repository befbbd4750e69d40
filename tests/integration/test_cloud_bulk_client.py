"""The cloud's MQTT transport (cloud.mqtt.bulk_client): many packets per socket read, acks written together,
nothing lost, reordered or left unacknowledged, on Mosquitto and the embedded broker."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from support.mqtt import Inbox
from support.net import wait_until

from cloud.mqtt.bulk_client import CloudTransport
from edge_agent.paho_transport import PahoTransport

TOPIC = "bulk/test"


@pytest.fixture
def socket_reads(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """id(paho client) -> recv calls it made on its socket."""
    counts: dict[int, int] = {}
    original = mqtt.Client._sock_recv

    def counting(self: mqtt.Client, bufsize: int) -> bytes:
        counts[id(self)] = counts.get(id(self), 0) + 1
        return original(self, bufsize)

    monkeypatch.setattr(mqtt.Client, "_sock_recv", counting)
    return counts


@pytest.fixture
def transports() -> Iterator[list[PahoTransport]]:
    made: list[PahoTransport] = []
    yield made
    for transport in made:
        transport.stop()


def _start(made: list[PahoTransport], cls: type[PahoTransport], broker: Any, client_id: str, **kw: Any) -> Any:
    transport = cls(broker.url, client_id, protocol=broker.mqtt_protocol, reconnect_min_s=0.1, reconnect_max_s=1.0,
                    **kw)  # fmt: skip
    made.append(transport)
    return transport


def _publish_offline_backlog(
    transports: list[PahoTransport], broker: Any, receiver_id: str, payloads: list[bytes]
) -> Callable[[], tuple[CloudTransport, Inbox]]:
    """A persistent session for receiver_id subscribed to TOPIC, `payloads` published (QoS 1) while it is
    away; returns a function that connects it again (the broker then sends the backlog in a burst)."""
    first = _start(transports, CloudTransport, broker, receiver_id, clean_start=False)
    first.subscribe(TOPIC)
    first.start()
    assert first.wait_connected(10)
    first.stop()
    publisher = _start(transports, PahoTransport, broker, f"pub-{receiver_id}", max_queued=len(payloads) + 10)
    publisher.start()
    assert publisher.wait_connected(10)
    for payload in payloads:
        publisher.publish(TOPIC, payload, qos=1)
    assert wait_until(lambda: publisher._client._out_messages == {}, 20), "the broker did not take the backlog"

    def reconnect() -> tuple[CloudTransport, Inbox]:
        receiver = _start(transports, CloudTransport, broker, receiver_id, clean_start=False)
        inbox = Inbox()
        receiver.set_message_handler(inbox)
        receiver.subscribe(TOPIC)
        receiver.start()
        return receiver, inbox

    return reconnect


def test_a_burst_is_read_many_messages_per_recv_in_order(
    mosquitto_broker: Any, transports: list[PahoTransport], socket_reads: dict[int, int]
) -> None:
    # stock paho makes at least three recvs per message (first byte, length, rest): ~6,000 here
    payloads = [f"m{n:05d}".encode() * 10 for n in range(2_000)]
    receiver, inbox = _publish_offline_backlog(transports, mosquitto_broker, f"bulk-{os.getpid()}", payloads)()
    assert inbox.wait_for(len(payloads), 30), f"{len(inbox)} of {len(payloads)} arrived"
    assert inbox.payloads() == payloads  # none lost, none doubled, in order
    reads = socket_reads[id(receiver._client)]
    assert reads < len(payloads) / 4, f"{reads} socket reads for {len(payloads)} messages"


def test_every_message_is_acknowledged(each_broker: Any, transports: list[PahoTransport]) -> None:
    """After the burst, a reconnect of the same session gets nothing again: every PUBACK reached the broker."""
    if each_broker.kind == "embedded":
        pytest.skip("the embedded broker keeps no offline queue for a persistent session")
    payloads = [bytes([n % 256]) * (n % 300 + 1) for n in range(1_500)]
    reconnect = _publish_offline_backlog(transports, each_broker, f"acks-{os.getpid()}", payloads)
    receiver, inbox = reconnect()
    assert inbox.wait_for(len(payloads), 30)
    receiver.stop()
    again, second = reconnect()
    assert again.wait_connected(10)
    assert not second.wait_for(1, 1.5), f"{len(second)} message(s) delivered again: their acks were lost"
    assert inbox.payloads() == payloads


def test_a_stop_while_the_handler_holds_a_message_acks_it_before_disconnecting(
    mosquitto_broker: Any, transports: list[PahoTransport]
) -> None:
    """stop() from another thread while the handler runs: the ack of what the handler took must go before the
    DISCONNECT (else the next session gets it again), and what it did not take comes next session (no loss)."""
    payloads = [f"s{n:04d}".encode() for n in range(300)]
    receiver_id = f"stop-{os.getpid()}"
    reconnect = _publish_offline_backlog(transports, mosquitto_broker, receiver_id, payloads)
    receiver = _start(transports, CloudTransport, mosquitto_broker, receiver_id, clean_start=False)
    taken = Inbox()
    stopper = threading.Thread(target=receiver.stop)

    def disconnect_queued() -> bool:
        return any(packet["command"] == mqtt.DISCONNECT for packet in list(receiver._client._out_packet))

    def handler(topic: str, payload: bytes) -> None:
        taken(topic, payload)
        if len(taken) == 1:
            stopper.start()
            wait_until(disconnect_queued, 2)  # stock paho queues it at once, ahead of this message's ack

    receiver.set_message_handler(handler)
    receiver.subscribe(TOPIC)
    receiver.start()
    assert taken.wait_for(1, 30)
    stopper.join(30)
    assert not stopper.is_alive()
    again, second = reconnect()
    assert again.wait_connected(10)
    assert second.wait_for(len(payloads) - len(taken), 30), f"{len(taken)} taken, {len(second)} next session"
    assert not second.wait_for(len(payloads) - len(taken) + 1, 1.5), "acked messages came again"
    assert taken.payloads() + second.payloads() == payloads


def test_stop_returns_once_a_slow_broker_has_read_the_acks(
    mosquitto_broker: Any, transports: list[PahoTransport]
) -> None:
    """The broker reads nothing while the acks go out (paused): stop() must not return before it has read
    them, or a session taking over the client id at once (a restart) makes it drop them unread."""
    payloads = [bytes([n % 256]) * (n % 300 + 1) for n in range(1_500)]
    receiver_id = f"slow-{os.getpid()}"
    reconnect = _publish_offline_backlog(transports, mosquitto_broker, receiver_id, payloads)
    receiver = _start(transports, CloudTransport, mosquitto_broker, receiver_id, clean_start=False)
    taken = Inbox()
    PAUSE_AT = 300  # noqa: N806 - by then the broker has hundreds more on their way

    def handler(topic: str, payload: bytes) -> None:
        taken(topic, payload)
        if len(taken) == PAUSE_AT:
            mosquitto_broker.pause()  # what it has sent still comes; it reads none of the acks from here on

    receiver.set_message_handler(handler)
    receiver.subscribe(TOPIC)
    resume = threading.Timer(2.0, mosquitto_broker.resume)
    try:
        receiver.start()
        assert taken.wait_for(PAUSE_AT, 30)
        _wait_until_steady(taken)  # what was on its way has been read, and acked
        resume.start()
        receiver.stop()
        again, second = reconnect()  # at once, maybe while the broker is still paused
        resume.join()
    finally:
        resume.cancel()
        mosquitto_broker.resume()
    assert again.wait_connected(10)
    rest = len(payloads) - len(taken)
    assert second.wait_for(rest, 30), f"{len(taken)} taken, {len(second)} next session"
    assert not second.wait_for(rest + 1, 1.5), f"{len(second) - rest} acked message(s) came again"
    assert taken.payloads() + second.payloads() == payloads


def _wait_until_steady(inbox: Inbox, quiet_s: float = 0.5) -> None:
    count = -1
    while len(inbox) != count:
        count = len(inbox)
        time.sleep(quiet_s)


def test_large_and_small_messages_interleaved_arrive_whole(each_broker: Any, transports: list[PahoTransport]) -> None:
    """Messages larger than one read (64 KB), split across reads, between small ones, live (no backlog)."""
    receiver = _start(transports, CloudTransport, each_broker, f"mixed-{os.getpid()}")
    inbox = Inbox()
    receiver.set_message_handler(inbox)
    receiver.subscribe(TOPIC)
    receiver.start()
    assert receiver.wait_connected(10)
    publisher = _start(transports, PahoTransport, each_broker, f"mixed-pub-{os.getpid()}")
    publisher.start()
    assert publisher.wait_connected(10)
    payloads = [(bytes([n]) * (200_000 if n % 5 == 0 else 50 + n)) for n in range(60)]
    for payload in payloads:
        publisher.publish(TOPIC, payload, qos=1)
    assert inbox.wait_for(len(payloads), 30), f"{len(inbox)} of {len(payloads)}"
    assert inbox.payloads() == payloads
