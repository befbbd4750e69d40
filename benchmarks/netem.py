"""The shaping proxy (simulator.netem) at fleet scale: what it costs, and what a profile does to a fan-out.

For each client count, on a Mosquitto of its own, side by side in one run: N plain gmqtt clients on one
event loop connect, subscribe and read 10 retained QoS 1 chunks of 10 KB (the fleet benchmark's fan-out
floor), once straight to the broker and once through the proxy per profile:

  direct_s          to the broker
  proxy_<name>_s    through the proxy with profile <name> ("unshaped": no delay, no bucket: the proxy's
                    own cost; then the named profiles, with their Poisson drops switched off so that every
                    run reads the same bytes)
  <name>_over_direct  the ratio

    .venv/bin/python benchmarks/netem.py [--clients 200,1000] [--profiles wired,4g,3g]

Prints one JSON object last: {"records": [...]}, one record per client count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the private Mosquitto the tests use (tests/support/mosquitto.py)

import gmqtt  # noqa: E402
from support.mosquitto import MosquittoBroker  # noqa: E402

from simulator.loop_thread import LoopThread  # noqa: E402
from simulator.netem import PROFILES, NetworkProfile, NetworkShaper  # noqa: E402

CHUNKS, CHUNK_BYTES = 10, 10_000


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


def measure(broker_url: str, clients: int, profiles: list[str], timeout_s: float) -> dict[str, Any]:
    record: dict[str, Any] = {"clients": clients}
    direct = fan_out(broker_url, broker_url, clients, timeout_s, "direct")
    record["direct_s"] = None if direct is None else round(direct, 3)
    for name in ["unshaped", *profiles]:
        profile = (
            NetworkProfile() if name == "unshaped" else PROFILES[name].model_copy(update={"disconnects_per_hour": 0})
        )
        with NetworkShaper(broker_url, lambda _device, p=profile: p) as shaper:
            elapsed = fan_out(broker_url, shaper.url, clients, timeout_s, name.replace("-", ""))
        key = name.replace("-", "_")
        record[f"proxy_{key}_s"] = None if elapsed is None else round(elapsed, 3)
        record[f"{key}_over_direct"] = round(elapsed / direct, 2) if elapsed and direct else None
        print(f"{clients} clients, {name}: {record[f'proxy_{key}_s']} s (direct {record['direct_s']} s)",
              file=sys.stderr, flush=True)  # fmt: skip
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="200,1000")
    parser.add_argument("--profiles", default="wired,4g,3g")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    profiles = [p for p in args.profiles.split(",") if p]
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        parser.error(f"no profile named {', '.join(unknown)} (profiles: {', '.join(PROFILES)})")
    records = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-netem-") as workdir:
        for clients in (int(n) for n in args.clients.split(",")):
            with MosquittoBroker(Path(workdir) / f"mosquitto-{clients}") as broker:
                records.append(measure(broker.url, clients, profiles, args.timeout))
    print(json.dumps({"records": records}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
