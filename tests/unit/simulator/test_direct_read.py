"""DirectReadProtocol: gmqtt's packets parsed as each read arrives, however the reads cut them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from simulator.direct_read import DirectReadProtocol


def _publish(topic: str, mid: int, payload: bytes) -> bytes:
    """A QoS 1 PUBLISH, as a broker sends it (MQTT 3.1.1)."""
    body = len(topic).to_bytes(2, "big") + topic.encode() + mid.to_bytes(2, "big") + payload
    length, size = b"", len(body)
    while True:
        byte, size = size % 128, size // 128
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    return bytes([0x32]) + length + body


class _Connection:
    def __init__(self) -> None:
        self.packets: list[tuple[int, bytes]] = []

    def put_package(self, package: Any) -> None:
        self.packets.append((package.cmd, bytes(package.data)))


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _protocol() -> tuple[DirectReadProtocol, _Connection, _Transport]:
    protocol = DirectReadProtocol(connection_state=None, id_generator=None)
    connection, transport = _Connection(), _Transport()
    protocol.set_connection(connection)
    protocol.connection_made(transport)
    return protocol, connection, transport


PACKETS = [_publish("f/art/chunk/0", 1, bytes(range(256)) * 40), _publish("d/desired", 2, b"x" * 300), b"\xd0\x00"]
STREAM = b"".join(PACKETS)
# (command, what follows the fixed header): what gmqtt's handler is given for each packet
EXPECTED = [(0x32, PACKETS[0][3:]), (0x32, PACKETS[1][3:]), (0xD0, b"")]


@pytest.mark.parametrize("cut", [len(STREAM), 1, 2, 7, 4096, len(PACKETS[0]) - 1, len(PACKETS[0]) + 1])
def test_every_packet_arrives_whole_and_in_order_however_reads_cut_them(cut: int) -> None:
    async def feed() -> list[tuple[int, bytes]]:
        protocol, connection, transport = _protocol()
        for start in range(0, len(STREAM), cut):
            protocol.data_received(STREAM[start : start + cut])
        assert not transport.closed
        return connection.packets

    assert asyncio.run(feed()) == EXPECTED


def test_the_brokers_eof_closes_the_link() -> None:
    async def eof() -> bool | None:
        protocol, _connection, _transport = _protocol()
        return protocol.eof_received()

    assert not asyncio.run(eof())  # asyncio closes the transport itself on a false answer


def _handled(packets: list[tuple[int, bytes]], lean: bool) -> list[tuple[Any, ...]]:
    """What a gmqtt client's handler does with these packets: the PUBACKs it sends and the messages it
    hands over, in order."""
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv311
    from gmqtt.mqtt.package import Package

    from simulator.direct_read import lean_publish

    async def run() -> list[tuple[Any, ...]]:
        client = gmqtt.Client("lean")
        handler = client._package_handler
        handler._connection_state.protocol_version = MQTTv311
        done: list[tuple[Any, ...]] = []
        handler._send_puback = lambda mid, reason_code=0: done.append(("puback", mid))
        client.on_message = lambda _c, topic, payload, qos, props: done.append((topic, bytes(payload), qos, props))
        if lean:
            lean_publish(handler)
        for cmd, data in packets:
            handler(Package(cmd, data))
        return done

    return asyncio.run(run())


def test_the_lean_publish_hands_over_what_gmqtt_would() -> None:
    qos0 = b"\x00\x03a/b" + b"zero"
    qos1_retained_dup = b"\x00\x0cf/art/chunk/" + b"\x01\x02" + bytes(range(256)) * 40
    qos1_empty = b"\x00\x01t" + b"\xff\xfe"
    packets = [(0x30, qos0), (0x33, qos1_retained_dup), (0x3A, qos1_retained_dup), (0x32, qos1_empty)]
    handled = _handled(packets, lean=True)
    assert handled == _handled(packets, lean=False)
    assert [h for h in handled if h[0] == "puback"] == [("puback", 0x0102)] * 2 + [("puback", 0xFFFE)]
    assert handled[0] == ("a/b", b"zero", 0, {"dup": 0, "retain": 0})
