"""Network profiles for simulated devices, applied by a shaping TCP proxy in front of the MQTT broker.

A `NetworkProfile` names a link as an operator thinks of it (`PROFILES`: wired, wifi-good, wifi-poor, 4g,
3g, satellite, intermittent) by its one-way latency, jitter, loss, bandwidth and how often it drops.
`ShapingProxy` listens on loopback; every simulated device connects to it instead of the broker, and the
proxy reads the device's MQTT CONNECT to learn which device it is, so one listener serves every device
and each connection is shaped by its own device's profile:

* latency + jitter: every chunk of bytes is held for latency plus a gaussian jitter, never overtaking the
  chunk before it (TCP delivers in order, so jitter shows as bunching, not reordering);
* bandwidth: a token bucket per direction and connection (`TokenBucket`);
* loss: TCP retransmits, so a lost segment is a stall of one retransmission timeout (doubling while
  losses repeat), and six losses in a row end the connection as TCP would;
* disconnects per hour: a Poisson process per device; a drop closes both sides without an MQTT
  DISCONNECT (the broker publishes the device's will) and keeps the device off the link for `outage_s`.

Faults the scenario plays through the proxy: `cut(device, offline_s)` and `corrupt(device, chunks)`, which
flips one byte in the data of the next `chunks` artifact chunks the broker sends that device (a tamper
between broker and device: the agent's digest check must refuse the artifact).

The proxy runs on an event loop of its own (`NetworkShaper` is the thread-safe face the simulator uses),
so shaping timers are not held up by thousands of agents on the host's loop. It only ever listens on and
connects to loopback addresses it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.broker_url import parse_broker_url
from protocols.v1 import messages_pb2 as pb
from simulator.loop_thread import LoopThread

__all__ = ["PROFILES", "DeviceLink", "NetworkProfile", "NetworkShaper", "ShapingProxy", "TokenBucket"]

log = logging.getLogger(__name__)

READ_BYTES = 16 * 1024  # one shaped chunk at most; small enough that a slow link buffers little
QUEUE_CHUNKS = 16  # chunks in flight per direction before the proxy stops reading (TCP backpressure)
SEGMENT_BYTES = 1460  # loss is per TCP segment
MIN_RTO_S = 0.2  # Linux's minimum retransmission timeout
MAX_LOSSES_IN_A_ROW = 6  # then the connection is given up for dead
CONNECT_READ_TIMEOUT_S = 10.0


class NetworkProfile(BaseModel):
    """A link's figures. Latency and jitter are one way (a round trip is twice the latency)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(0.0, ge=0, le=10_000)
    jitter_ms: float = Field(0.0, ge=0, le=10_000)
    loss: float = Field(0.0, ge=0, le=0.5)  # fraction of TCP segments lost
    bandwidth_kbps: float = Field(0.0, ge=0)  # kilobits per second each way; 0: unlimited
    disconnects_per_hour: float = Field(0.0, ge=0, le=100_000)
    outage_s: float = Field(5.0, ge=0, le=3600)  # how long the link stays down after a drop

    @property
    def rto_s(self) -> float:
        return max(MIN_RTO_S, 4 * self.latency_ms / 1000)  # about twice the round trip


# Typical figures, one way. Sources: operators' published latency/throughput ranges; loss and drop rates are
# deliberately pessimistic so a rehearsal sees the retries a real fleet would.
PROFILES: dict[str, NetworkProfile] = {
    "wired": NetworkProfile(latency_ms=1, bandwidth_kbps=100_000),
    "wifi-good": NetworkProfile(latency_ms=5, jitter_ms=2, loss=0.001, bandwidth_kbps=50_000),
    "wifi-poor": NetworkProfile(
        latency_ms=40, jitter_ms=30, loss=0.02, bandwidth_kbps=2_000, disconnects_per_hour=2, outage_s=5
    ),
    "4g": NetworkProfile(
        latency_ms=40, jitter_ms=15, loss=0.005, bandwidth_kbps=10_000, disconnects_per_hour=1, outage_s=10
    ),
    "3g": NetworkProfile(
        latency_ms=150, jitter_ms=50, loss=0.01, bandwidth_kbps=1_000, disconnects_per_hour=2, outage_s=15
    ),
    "satellite": NetworkProfile(
        latency_ms=300, jitter_ms=30, loss=0.005, bandwidth_kbps=2_000, disconnects_per_hour=1, outage_s=30
    ),
    "intermittent": NetworkProfile(
        latency_ms=80, jitter_ms=40, loss=0.02, bandwidth_kbps=1_000, disconnects_per_hour=60, outage_s=20
    ),
}


class TokenBucket:
    """Bytes at `rate_bytes_s` with bursts of up to `burst_bytes`. `reserve(n, now)` takes n bytes' tokens
    (running into debt if need be) and says when they have gone out: now, or once the debt is paid."""

    def __init__(self, rate_bytes_s: float, burst_bytes: float, now: float) -> None:
        if rate_bytes_s <= 0 or burst_bytes <= 0:
            raise ValueError(f"rate and burst must be positive, got {rate_bytes_s} and {burst_bytes}")
        self.rate, self.burst = rate_bytes_s, burst_bytes
        self._tokens, self._at = burst_bytes, now

    def reserve(self, n: int, now: float) -> float:
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
        self._tokens -= n
        return now if self._tokens >= 0 else now + -self._tokens / self.rate


class _Direction:
    """One direction of one connection: when each chunk of bytes is due at the other end."""

    def __init__(self, profile: NetworkProfile, rng: random.Random, now: float) -> None:
        self.profile, self.rng = profile, rng
        rate = profile.bandwidth_kbps * 1000 / 8
        # a burst of ~10 ms of traffic, at least two segments; a larger read waits its turn (runs into debt)
        self.bucket = TokenBucket(rate, max(2 * SEGMENT_BYTES, rate / 100), now) if rate > 0 else None
        self.last_due = now
        self.stalls = 0

    def due(self, n: int, now: float) -> float | None:
        """When n bytes read now arrive; None if TCP would give up on the connection."""
        sent = self.bucket.reserve(n, now) if self.bucket is not None else now
        p = self.profile
        delay = p.latency_ms / 1000 + (abs(self.rng.gauss(0.0, p.jitter_ms / 1000)) if p.jitter_ms else 0.0)
        if p.loss > 0:
            segments = max(1, math.ceil(n / SEGMENT_BYTES))
            p_any = 1 - (1 - p.loss) ** segments
            rto, losses = p.rto_s, 0
            while self.rng.random() < p_any:
                losses += 1
                if losses >= MAX_LOSSES_IN_A_ROW:
                    return None
                delay += rto
                rto *= 2
                p_any = p.loss  # a retransmission is one segment
            self.stalls += losses > 0
        self.last_due = max(sent + delay, self.last_due)
        return self.last_due


@dataclass
class DeviceLink:
    """What the proxy knows and counts about one device's link."""

    device_id: str
    profile: NetworkProfile
    connections: int = 0
    drops: int = 0  # Poisson drops and given-up connections
    cuts: int = 0  # cut() by a fault
    refused: int = 0  # connection attempts while the link was down
    stalls: int = 0
    corrupted: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    offline_until: float = 0.0
    corrupt_next: int = 0
    next_drop_at: float = math.inf
    _live: set[_Connection] = field(default_factory=set, repr=False)


class ShapingProxy:
    """The proxy on the running loop: `await start()` gives the port; `await close()` ends everything."""

    def __init__(self, upstream_url: str, profile_of: Callable[[str], NetworkProfile], *, seed: int = 0,
                 host: str = "127.0.0.1") -> None:  # fmt: skip
        address = parse_broker_url(upstream_url)
        if address.tls:
            raise ValueError("the shaping proxy reads MQTT CONNECT packets: it needs a plain mqtt:// broker")
        self.upstream = (address.host, address.port)
        self.host = host
        self._profile_of = profile_of
        self._rng = random.Random(seed)
        self.links: dict[str, DeviceLink] = {}
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}  # every accepted client, till it ends
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self.links.values():
            for connection in list(link._live):
                connection.end()
        for writer in self._clients.values():  # those still sending their CONNECT or being connected
            writer.transport.abort()
        if self._clients:
            await asyncio.wait(list(self._clients), timeout=5)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def link(self, device_id: str) -> DeviceLink:
        link = self.links.get(device_id)
        if link is None:
            profile = self._profile_of(device_id)
            link = self.links[device_id] = DeviceLink(device_id, profile)
            link.next_drop_at = self._next_drop(link, time.monotonic())
        return link

    def cut(self, device_id: str, offline_s: float) -> None:
        """Drop the device's link now (no DISCONNECT reaches the broker) and keep it down for offline_s."""
        link = self.link(device_id)
        link.cuts += 1
        link.offline_until = max(link.offline_until, time.monotonic() + offline_s)
        for connection in list(link._live):
            connection.end()

    def corrupt(self, device_id: str, chunks: int) -> None:
        self.link(device_id).corrupt_next += chunks

    def _next_drop(self, link: DeviceLink, after: float) -> float:
        rate = link.profile.disconnects_per_hour / 3600
        return after + self._rng.expovariate(rate) if rate > 0 else math.inf

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = writer
        try:
            await self._serve(reader, writer)
        finally:
            del self._clients[task]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            connect = await asyncio.wait_for(read_packet(reader), CONNECT_READ_TIMEOUT_S)
            device_id, level = connect_info(connect)
        except (asyncio.IncompleteReadError, TimeoutError, ValueError, ConnectionError) as exc:
            log.info("shaping proxy: dropped a client that sent no usable CONNECT (%s)", exc)
            writer.transport.abort()
            return
        link = self.link(device_id)
        now = time.monotonic()
        if now < link.offline_until:
            link.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError as exc:  # the broker is down (e.g. restarting): the device sees its link fail
            log.info("shaping proxy: broker unreachable for %s: %s", device_id, exc)
            writer.transport.abort()
            return
        link.connections += 1
        connection = _Connection(self, link, (reader, writer), (up_reader, up_writer), mqtt5=level == 5)
        link._live.add(connection)
        try:
            await connection.run(connect)
        finally:
            link._live.discard(connection)


class _Connection:
    def __init__(self, proxy: ShapingProxy, link: DeviceLink,
                 device: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 broker: tuple[asyncio.StreamReader, asyncio.StreamWriter], *, mqtt5: bool) -> None:  # fmt: skip
        self.proxy, self.link, self.mqtt5 = proxy, link, mqtt5
        self.device, self.broker = device, broker
        self._tasks: list[asyncio.Task[None]] = []
        self._ended = False

    async def run(self, connect: bytes) -> None:
        now = time.monotonic()
        rng = self.proxy._rng
        up, down = _Direction(self.link.profile, rng, now), _Direction(self.link.profile, rng, now)
        up_queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        down_queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        first = up.due(len(connect), now)
        if first is None:
            self.end()
            return
        up_queue.put_nowait((first, connect))
        self.link.bytes_up += len(connect)
        self._tasks = [
            asyncio.create_task(self._read_up(up, up_queue)),
            asyncio.create_task(self._write(up_queue, self.broker[1])),
            asyncio.create_task(self._read_down(down, down_queue)),
            asyncio.create_task(self._write(down_queue, self.device[1])),
            asyncio.create_task(self._drop_when_due()),
        ]
        # ends when either side has closed and what it sent before has been delivered, or the link drops
        await asyncio.wait([self._tasks[1], self._tasks[3], self._tasks[4]], return_when=asyncio.FIRST_COMPLETED)
        self.end()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.link.stalls += up.stalls + down.stalls

    def end(self) -> None:
        """Close both sides at once, as a dead link would: no MQTT DISCONNECT goes anywhere."""
        if self._ended:
            return
        self._ended = True
        for task in self._tasks:
            task.cancel()
        self.device[1].transport.abort()
        self.broker[1].transport.abort()

    async def _read_up(self, direction: _Direction, queue: asyncio.Queue[tuple[float, bytes]]) -> None:
        reader = self.device[0]
        try:
            while data := await reader.read(READ_BYTES):
                self.link.bytes_up += len(data)
                due = direction.due(len(data), time.monotonic())
                if due is None:
                    self._given_up()
                    return
                await queue.put((due, data))
        finally:
            if not self._ended:  # the end: the writer stops once the rest is out
                await queue.put((direction.last_due, b""))

    async def _read_down(self, direction: _Direction, queue: asyncio.Queue[tuple[float, bytes]]) -> None:
        """Broker to device, cut at MQTT packet boundaries so a chunk's PUBLISH can be tampered with."""
        reader, pending = self.broker[0], b""
        try:
            while data := await reader.read(READ_BYTES):
                pending += data
                packets, pending = split_packets(pending)
                if not packets:
                    continue
                if self.link.corrupt_next > 0:
                    packets = [self._maybe_corrupt(p) for p in packets]
                out = b"".join(packets)
                self.link.bytes_down += len(out)
                due = direction.due(len(out), time.monotonic())
                if due is None:
                    self._given_up()
                    return
                await queue.put((due, out))
        finally:
            if not self._ended:
                await queue.put((direction.last_due, b""))

    def _given_up(self) -> None:
        """Losses in a row past TCP's patience: the connection is dead."""
        self.link.drops += 1
        self.end()

    def _maybe_corrupt(self, packet: bytes) -> bytes:
        if self.link.corrupt_next <= 0:
            return packet
        tampered = corrupt_chunk(packet, mqtt5=self.mqtt5)
        if tampered is not None:
            self.link.corrupt_next -= 1
            self.link.corrupted += 1
            return tampered
        return packet

    @staticmethod
    async def _write(queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    async def _drop_when_due(self) -> None:
        link = self.link
        while True:
            wait = link.next_drop_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 3600))
                continue
            link.drops += 1
            link.offline_until = max(link.offline_until, time.monotonic() + link.profile.outage_s)
            link.next_drop_at = self.proxy._next_drop(link, link.offline_until)
            return


# -- MQTT framing: just enough to find the client id and the artifact chunks -----------------------------


def _remaining_length(buf: bytes, start: int) -> tuple[int, int] | None:
    """(remaining length, bytes the varint took) at buf[start:], None when buf ends inside it."""
    value, shift = 0, 0
    for i in range(4):
        if start + i >= len(buf):
            return None
        byte = buf[start + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    raise ValueError("malformed MQTT remaining length")


def split_packets(buf: bytes) -> tuple[list[bytes], bytes]:
    """The whole MQTT packets at the start of buf, and what is left of a packet not yet whole."""
    packets, pos = [], 0
    while pos < len(buf):
        parsed = _remaining_length(buf, pos + 1)
        if parsed is None:
            break
        length, size = parsed
        end = pos + 1 + size + length
        if end > len(buf):
            break
        packets.append(buf[pos:end])
        pos = end
    return packets, buf[pos:]


async def read_packet(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(1)
    varint = b""
    while True:
        byte = await reader.readexactly(1)
        varint += byte
        if not byte[0] & 0x80:
            break
        if len(varint) == 4:
            raise ValueError("malformed MQTT remaining length")
    parsed = _remaining_length(head + varint, 1)
    assert parsed is not None
    return head + varint + await reader.readexactly(parsed[0])


def connect_info(packet: bytes) -> tuple[str, int]:
    """The client id and protocol level (4: 3.1.1, 5) of an MQTT CONNECT packet."""
    if not packet or packet[0] >> 4 != 1:
        raise ValueError("the first packet is not a CONNECT")
    parsed = _remaining_length(packet, 1)
    if parsed is None:
        raise ValueError("truncated CONNECT")
    pos = 1 + parsed[1]
    name_len = int.from_bytes(packet[pos : pos + 2], "big")
    pos += 2 + name_len
    level = packet[pos]
    pos += 1 + 1 + 2  # level, flags, keep alive
    if level == 5:
        props = _remaining_length(packet, pos)
        if props is None:
            raise ValueError("truncated CONNECT properties")
        pos += props[1] + props[0]
    id_len = int.from_bytes(packet[pos : pos + 2], "big")
    client_id = packet[pos + 2 : pos + 2 + id_len]
    if len(client_id) != id_len or not client_id:
        raise ValueError("CONNECT without a client id")
    return client_id.decode("utf-8"), level


def corrupt_chunk(packet: bytes, *, mqtt5: bool = False) -> bytes | None:
    """The PUBLISH packet with one byte of its artifact chunk's data flipped; None if it carries no chunk."""
    if packet[0] >> 4 != 3:
        return None
    qos = (packet[0] >> 1) & 3
    parsed = _remaining_length(packet, 1)
    assert parsed is not None
    pos = 1 + parsed[1]
    topic_len = int.from_bytes(packet[pos : pos + 2], "big")
    topic = packet[pos + 2 : pos + 2 + topic_len]
    if b"/art/" not in topic and not topic.endswith(b"/artifact/data"):
        return None
    pos += 2 + topic_len + (2 if qos else 0)
    if mqtt5:
        props = _remaining_length(packet, pos)
        if props is None:
            return None
        pos += props[1] + props[0]
    chunk = pb.ArtifactChunk()
    try:
        chunk.ParseFromString(packet[pos:])
    except Exception:  # noqa: BLE001 - not a chunk after all: leave it alone
        return None
    if not chunk.data:
        return None
    data = bytearray(chunk.data)
    data[len(data) // 2] ^= 0xFF
    chunk.data = bytes(data)
    payload = chunk.SerializeToString()
    if len(payload) != len(packet) - pos:  # same fields, same sizes: cannot happen, but never break framing
        return None
    return packet[:pos] + payload


class NetworkShaper:
    """A `ShapingProxy` on a loop thread of its own, for the simulator's (blocking) timeline."""

    def __init__(self, upstream_url: str, profile_of: Callable[[str], NetworkProfile], *, seed: int = 0) -> None:
        self._thread = LoopThread("edgefleet-sim-netem")
        self.proxy = ShapingProxy(upstream_url, profile_of, seed=seed)
        self.url = ""

    def __enter__(self) -> NetworkShaper:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> str:
        port = self._thread.run(self.proxy.start(), timeout_s=10)
        self.url = f"mqtt://{self.proxy.host}:{port}"
        return self.url

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._thread.run(self.proxy.close(), timeout_s=10)
        self._thread.stop()

    def cut(self, device_id: str, offline_s: float) -> None:
        self._thread.call(lambda: self.proxy.cut(device_id, offline_s), timeout_s=10)

    def corrupt(self, device_id: str, chunks: int) -> None:
        self._thread.call(lambda: self.proxy.corrupt(device_id, chunks), timeout_s=10)

    def links(self) -> dict[str, DeviceLink]:
        return self._thread.call(lambda: dict(self.proxy.links), timeout_s=10)
