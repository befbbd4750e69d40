"""The fan-out floor the fleet benchmarks compare against: plain asyncio MQTT clients (gmqtt, one event loop,
no agent) reading the same retained chunks. Shared by fleet.py (straight to the broker) and netem.py (also
through the simulator's shaping proxy), so both measure the same thing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import gmqtt

from simulator.loop_thread import LoopThread

CHUNKS, CHUNK_BYTES = 10, 10_000  # a ~100 KB artifact in 10 retained QoS 1 chunks


def fan_out(publish_url: str, read_url: str, clients: int, timeout_s: float, tag: str) -> float | None:
    """Seconds until `clients` fresh clients on read_url have each read every retained chunk published on
    publish_url; None on timeout."""
    pub_host, pub_port = publish_url.removeprefix("mqtt://").split(":")
    host, port = read_url.removeprefix("mqtt://").split(":")
    topic = f"netem/{tag}/{time.monotonic_ns()}"

    async def run() -> float | None:
        publisher = gmqtt.Client(f"pub-{tag}")
        await publisher.connect(pub_host, int(pub_port))
        for n in range(CHUNKS):
            publisher.publish(f"{topic}/{n}", bytes([n]) * CHUNK_BYTES, qos=1, retain=True)
        await asyncio.sleep(0.5)  # acknowledged: the retained chunks are in place
        done, complete, gate = asyncio.Event(), [0], asyncio.Semaphore(64)

        def reader(n: int) -> gmqtt.Client:
            got: set[str] = set()
            client = gmqtt.Client(f"{tag}-{n:05d}")

            def on_message(_c: Any, t: str, _p: bytes, _q: int, _props: Any) -> int:
                if t not in got:
                    got.add(t)
                    if len(got) == CHUNKS:
                        complete[0] += 1
                        if complete[0] == clients:
                            done.set()
                return 0

            client.on_message = on_message
            return client

        async def connect(client: gmqtt.Client) -> None:
            async with gate:
                await client.connect(host, int(port), keepalive=60)
            client.subscribe(f"{topic}/#", qos=1)

        readers = [reader(n) for n in range(clients)]
        start = time.perf_counter()
        await asyncio.gather(*(connect(c) for c in readers))
        try:
            await asyncio.wait_for(done.wait(), timeout_s)
            elapsed: float | None = time.perf_counter() - start
        except TimeoutError:
            elapsed = None
        for client in [publisher, *readers]:
            with contextlib.suppress(Exception):
                await client.disconnect()
        return elapsed

    with LoopThread(f"netem-{tag}") as loop:
        return loop.run(run(), timeout_s + 120)
