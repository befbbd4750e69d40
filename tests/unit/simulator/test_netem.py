"""The shaping proxy: its token bucket and MQTT framing as pure functions, and the proxy itself between a
raw client and a raw TCP sink on loopback (latency, bandwidth, loss as stalls, Poisson drops, cuts with an
outage, chunk tampering). Timings are only checked as lower bounds the shaping must impose, with generous
upper bounds so a loaded machine cannot fail them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from protocols.v1 import messages_pb2 as pb
from simulator.netem import (
    PROFILES,
    NetworkProfile,
    ShapingProxy,
    TokenBucket,
    connect_info,
    corrupt_chunk,
    split_packets,
)

pytestmark = pytest.mark.timeout(60)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


def connect_packet(client_id: str, level: int = 4) -> bytes:
    body = _str(b"MQTT") + bytes([level, 0x02]) + (60).to_bytes(2, "big")
    if level == 5:
        body += _varint(0)  # no properties
    body += _str(client_id.encode())
    return bytes([0x10]) + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, qos: int = 1) -> bytes:
    body = _str(topic.encode()) + ((7).to_bytes(2, "big") if qos else b"") + payload
    return bytes([0x30 | qos << 1]) + _varint(len(body)) + body


# -- pure parts ------------------------------------------------------------------------------------------


def test_the_token_bucket_lets_a_burst_through_then_paces_at_its_rate() -> None:
    bucket = TokenBucket(rate_bytes_s=1000, burst_bytes=500, now=0.0)
    assert bucket.reserve(500, 0.0) == 0.0  # the burst
    assert bucket.reserve(1000, 0.0) == pytest.approx(1.0)  # then 1,000 bytes take a second
    assert bucket.reserve(1000, 0.5) == pytest.approx(2.0)  # queued behind the debt
    assert bucket.reserve(100, 10.0) == 10.0  # refilled (up to the burst) while idle
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0, 1, 0.0)


def test_mqtt_packets_are_split_where_they_end() -> None:
    a, b = publish_packet("t/a", b"x" * 300), publish_packet("t/b", b"y")
    stream = a + b
    packets, rest = split_packets(stream[: len(a) + 3])
    assert packets == [a] and rest == b[:3]
    assert split_packets(stream) == ([a, b], b"")
    assert split_packets(a[:2]) == ([], a[:2])  # inside the length varint


@pytest.mark.parametrize("level", [4, 5])
def test_the_client_id_is_read_from_a_connect(level: int) -> None:
    assert connect_info(connect_packet("field-0007", level)) == ("field-0007", level)
    with pytest.raises(ValueError, match="not a CONNECT"):
        connect_info(publish_packet("t", b"x"))


def test_a_chunk_is_tampered_and_anything_else_left_alone() -> None:
    chunk = pb.ArtifactChunk(sha256="ab" * 32, index=2, total_chunks=4, offset=20, data=bytes(range(10)))
    packet = publish_packet("ef/v1/default/art/" + "ab" * 32 + "/10/2", chunk.SerializeToString())
    tampered = corrupt_chunk(packet)
    assert tampered is not None and len(tampered) == len(packet)
    got = pb.ArtifactChunk()
    got.ParseFromString(tampered[len(packet) - chunk.ByteSize() :])
    assert got.index == 2 and got.data != chunk.data and len(got.data) == len(chunk.data)
    assert sum(x != y for x, y in zip(got.data, chunk.data, strict=True)) == 1
    per_device = publish_packet("ef/v1/default/dev/d1/artifact/data", chunk.SerializeToString())
    assert corrupt_chunk(per_device) is not None
    assert corrupt_chunk(publish_packet("ef/v1/default/dev/d1/desired", chunk.SerializeToString())) is None
    assert corrupt_chunk(connect_packet("d1")) is None


def test_every_named_profile_is_valid_and_slower_links_are_slower() -> None:
    assert set(PROFILES) == {"wired", "wifi-good", "wifi-poor", "4g", "3g", "satellite", "intermittent"}
    assert PROFILES["satellite"].latency_ms > PROFILES["3g"].latency_ms > PROFILES["wired"].latency_ms
    assert PROFILES["intermittent"].disconnects_per_hour > PROFILES["3g"].disconnects_per_hour


# -- the proxy between a client and a sink ---------------------------------------------------------------


class Sink:
    """A TCP server that keeps what it receives and can send to its client."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.connections = 0
        self.closed = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        while data := await reader.read(65536):
            self.received += data
        self.closed.set()


_clients: list[asyncio.StreamWriter] = []


async def dial(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    _clients.append(writer)
    return reader, writer


Body = Callable[[ShapingProxy, Sink, int], Awaitable[None]]


def run_shaped(profile: NetworkProfile, body: Body) -> None:
    """Run body(proxy, sink, proxy_port) on a fresh loop with the proxy in front of a sink; close all."""

    async def main() -> None:
        sink = Sink()
        server = await asyncio.start_server(sink.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy = ShapingProxy(f"mqtt://127.0.0.1:{port}", lambda _device: profile, seed=1)
        try:
            await body(proxy, sink, await proxy.start())
        finally:
            await proxy.close()
            for writer in [*_clients, *sink.writers]:
                writer.close()
            _clients.clear()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


async def _until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout_s, "timed out"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def test_latency_delays_each_direction() -> None:
    async def body(proxy: ShapingProxy, sink: Sink, port: int) -> None:
        reader, writer = await dial(port)
        hello = connect_packet("dev-1")
        start = time.monotonic()
        writer.write(hello + b"ping")
        await _until(lambda: bytes(sink.received) == hello + b"ping")
        assert time.monotonic() - start >= 0.14  # held for the one-way latency
        start = time.monotonic()
        sink.writers[0].write(publish_packet("t", b"pong"))
        packet = await asyncio.wait_for(reader.readexactly(len(publish_packet("t", b"pong"))), 5)
        assert packet.endswith(b"pong") and time.monotonic() - start >= 0.14
        assert proxy.links["dev-1"].connections == 1
        writer.close()

    run_shaped(NetworkProfile(latency_ms=150), body)


def test_bandwidth_paces_a_large_send() -> None:
    async def body(proxy: ShapingProxy, sink: Sink, port: int) -> None:
        # 160 kbit/s = 20 KB/s with a burst of two segments: 80 KB take at least 3.9 s
        _reader, writer = await dial(port)
        payload = connect_packet("dev-1") + b"z" * 80_000
        start = time.monotonic()
        writer.write(payload)
        await _until(lambda: len(sink.received) == len(payload), timeout_s=20)
        assert 3.8 <= time.monotonic() - start < 15
        assert bytes(sink.received) == payload  # paced, not altered
        assert proxy.links["dev-1"].bytes_up == len(payload)
        writer.close()

    run_shaped(NetworkProfile(bandwidth_kbps=160), body)


def test_loss_stalls_the_stream_but_loses_nothing() -> None:
    async def body(proxy: ShapingProxy, sink: Sink, port: int) -> None:
        _reader, writer = await dial(port)
        payload = connect_packet("dev-1") + b"".join(bytes([n % 256]) * 1000 for n in range(100))
        for n in range(0, len(payload), 1000):  # many small writes: many chances of a loss
            writer.write(payload[n : n + 1000])
            await asyncio.sleep(0.002)
        await _until(lambda: len(sink.received) == len(payload) or sink.closed.is_set(), timeout_s=30)
        link = proxy.links["dev-1"]
        if sink.closed.is_set():  # six losses in a row: TCP gave up, which the proxy counts as a drop
            assert link.drops == 1
        else:
            assert bytes(sink.received) == payload
            writer.close()
            await _until(lambda: not link._live)
            assert link.stalls > 0

    run_shaped(NetworkProfile(loss=0.1), body)


def test_a_cut_closes_both_sides_and_keeps_the_device_off_for_a_while() -> None:
    async def body(proxy: ShapingProxy, sink: Sink, port: int) -> None:
        reader, writer = await dial(port)
        writer.write(connect_packet("dev-1"))
        await _until(lambda: sink.connections == 1)
        proxy.cut("dev-1", offline_s=0.5)
        await asyncio.wait_for(sink.closed.wait(), 5)  # the broker side sees the link end (no DISCONNECT sent)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        reader, writer = await dial(port)
        writer.write(connect_packet("dev-1"))
        assert await asyncio.wait_for(reader.read(), 5) == b""  # refused while the link is down
        assert proxy.links["dev-1"].refused == 1 and sink.connections == 1
        await asyncio.sleep(0.6)
        _reader, writer = await dial(port)
        writer.write(connect_packet("dev-1"))
        await _until(lambda: sink.connections == 2)
        assert proxy.links["dev-1"].cuts == 1
        writer.close()

    run_shaped(PROFILES["wired"], body)


def test_disconnects_per_hour_drop_links_at_random() -> None:
    async def body(proxy: ShapingProxy, sink: Sink, port: int) -> None:
        # 36,000 an hour: one every 0.1 s on average
        reader, writer = await dial(port)
        writer.write(connect_packet("dev-1"))
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert proxy.links["dev-1"].drops == 1
        writer.close()

    run_shaped(NetworkProfile(disconnects_per_hour=36_000, outage_s=0.05), body)


def test_only_the_chosen_number_of_chunks_is_tampered() -> None:
    async def body(proxy: ShapingProxy, sink: Sink, port: int) -> None:
        reader, writer = await dial(port)
        writer.write(connect_packet("dev-1"))
        await _until(lambda: sink.connections == 1)
        proxy.corrupt("dev-1", chunks=1)
        chunks = [pb.ArtifactChunk(sha256="cd" * 32, index=i, data=bytes([i]) * 64) for i in range(3)]
        packets = [
            publish_packet(f"ef/v1/default/art/{'cd' * 32}/64/{i}", c.SerializeToString()) for i, c in enumerate(chunks)
        ]
        sink.writers[0].write(publish_packet("ef/v1/default/dev/dev-1/desired", b"keep") + b"".join(packets))
        head = await asyncio.wait_for(
            reader.readexactly(len(publish_packet("ef/v1/default/dev/dev-1/desired", b"keep"))), 5
        )
        assert head.endswith(b"keep")
        got = [await asyncio.wait_for(reader.readexactly(len(p)), 5) for p in packets]
        assert got[0] != packets[0] and got[1:] == packets[1:]
        assert proxy.links["dev-1"].corrupted == 1
        writer.close()

    run_shaped(PROFILES["wired"], body)


def test_a_client_that_sends_no_connect_is_dropped_and_the_proxy_keeps_serving() -> None:
    async def body(proxy: ShapingProxy, sink: Sink, port: int) -> None:
        reader, writer = await dial(port)
        writer.write(publish_packet("t", b"x"))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        _reader, writer = await dial(port)
        writer.write(connect_packet("dev-2"))
        await _until(lambda: sink.connections == 1)
        assert sink.connections == 1 and "dev-2" in proxy.links
        writer.close()

    run_shaped(PROFILES["wired"], body)


def test_a_chunk_in_an_mqtt5_publish_is_found_past_its_properties() -> None:
    chunk = pb.ArtifactChunk(sha256="ef" * 32, index=0, data=b"\x01" * 32)
    properties = bytes([0x01, 0x01])  # payload format indicator = 1
    body = _str(b"ef/v1/f/dev/d/artifact/data") + (9).to_bytes(2, "big") + _varint(len(properties)) + properties
    body += chunk.SerializeToString()
    packet = bytes([0x32]) + _varint(len(body)) + body
    tampered = corrupt_chunk(packet, mqtt5=True)
    assert (
        tampered is not None and tampered[: len(packet) - chunk.ByteSize()] == packet[: len(packet) - chunk.ByteSize()]
    )
    got = pb.ArtifactChunk()
    got.ParseFromString(tampered[len(packet) - chunk.ByteSize() :])
    assert got.data != chunk.data and got.sha256 == chunk.sha256


def test_with_the_broker_down_clients_are_dropped_and_served_again_once_it_is_back() -> None:
    async def main() -> None:
        sink = Sink()
        server = await asyncio.start_server(sink.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()  # the broker is down
        proxy = ShapingProxy(f"mqtt://127.0.0.1:{port}", lambda _device: PROFILES["wired"])
        proxy_port = await proxy.start()
        try:
            reader, writer = await dial(proxy_port)
            writer.write(connect_packet("dev-1"))
            assert await asyncio.wait_for(reader.read(), 5) == b""  # dropped: its link looks dead
            assert proxy.links["dev-1"].connections == 0
            server = await asyncio.start_server(sink.handle, "127.0.0.1", port)  # back on the same port
            _reader, writer = await dial(proxy_port)
            writer.write(connect_packet("dev-1"))
            await _until(lambda: sink.connections == 1)
            assert proxy.links["dev-1"].connections == 1
        finally:
            await proxy.close()
            for writer in [*_clients, *sink.writers]:
                writer.close()
            _clients.clear()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
