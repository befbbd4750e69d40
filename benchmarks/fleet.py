"""Fleet scale: a ~100 KB artifact rolled out to N simulated devices running the real agent, next to the
floor a broker allows for the same bytes.

For each fleet size, on a Mosquitto of its own, with a fresh cloud (SQLite, this process):
  fanout_floor_s         N plain asyncio MQTT clients (gmqtt, one loop, no agent) connect, subscribe and
                         read 10 retained QoS 1 chunks of 10 KB: what the broker and this machine allow
  connect_s              the simulated fleet (simulator.process_fleet: worker processes, each an AgentHost
                         of real agents on one event loop) started until every device is connected
  rollout_s              deploy() until every device reports the version active: verified (signature,
                         digest), fetched in chunks, loaded, self-tested, activated, reported
  deploy_s               of rollout_s, the cloud's deploy() alone: the deployment planned (a target row, a
                         signed assignment per device), committed, every desired state published
  rollout_over_floor     rollout_s / fanout_floor_s
  cloud_bytes_per_device MQTT payload bytes the cloud published during the rollout, per device
  rss_kb_per_device      the workers' resident memory growth from imports-done to rollout-done, per device

    .venv/bin/python benchmarks/fleet.py [--sizes 100,1000] [--workers 2] [--database-url postgresql://...]

The cloud keeps its data in SQLite unless --database-url names a PostgreSQL server (a production part:
SQLite's single writer locks up under a thousand devices); each fleet size then gets a database of its
own on that server, dropped afterwards.

Prints one JSON object last: {"records": [...]}, one record per fleet size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the private Mosquitto the tests use (tests/support/mosquitto.py)

import gmqtt  # noqa: E402
from sqlmodel import Session  # noqa: E402
from support.mosquitto import MosquittoBroker  # noqa: E402

from cloud import registry  # noqa: E402
from cloud.db.tables import DeploymentCreate  # noqa: E402
from cloud.identity.enrollment import enroll_device  # noqa: E402
from cloud.service import CloudService  # noqa: E402
from cloud.settings import CloudSettings  # noqa: E402
from cloud.training.pipeline import PipelineResult, TrainingConfig, run_training_pipeline  # noqa: E402
from simulator.host import DeviceSpec  # noqa: E402
from simulator.loop_thread import LoopThread  # noqa: E402
from simulator.process_fleet import ProcessFleet  # noqa: E402

MODEL_ID = "fleet-bench"
# an MLP whose INT8 ONNX artifact is about 100 KB (64 inputs x 1,500 hidden + 1,500 x 10 weights)
MODEL = TrainingConfig(model_id=MODEL_ID, estimator="mlp", params={"hidden_layer_sizes": (1500,), "max_iter": 60})
FLOOR_CHUNKS, FLOOR_CHUNK_BYTES = 10, 10_000


def fanout_floor(url: str, clients: int, timeout_s: float) -> float | None:
    """Seconds until `clients` fresh gmqtt clients have each read every retained chunk; None on timeout."""
    host, port = url.removeprefix("mqtt://").split(":")
    topic = f"floor/{time.monotonic_ns()}"

    async def run() -> float | None:
        publisher = gmqtt.Client(f"floor-pub-{topic}")
        await publisher.connect(host, int(port))
        for n in range(FLOOR_CHUNKS):
            publisher.publish(f"{topic}/{n}", bytes([n]) * FLOOR_CHUNK_BYTES, qos=1, retain=True)
        await asyncio.sleep(0.5)  # QoS 1 acknowledged: the retained chunks are in place
        done = asyncio.Event()
        complete = [0]
        gate = asyncio.Semaphore(64)
        readers = []

        def reader(n: int) -> gmqtt.Client:
            got: set[str] = set()
            client = gmqtt.Client(f"floor-{n}")

            def on_message(_c: Any, t: str, _p: bytes, _q: int, _props: Any) -> int:
                if t not in got:
                    got.add(t)
                    if len(got) == FLOOR_CHUNKS:
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

        start = time.perf_counter()
        readers = [reader(n) for n in range(clients)]
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

    with LoopThread("fanout-floor") as loop:
        return loop.run(run(), timeout_s + 120)


def wait_for(count: Any, target: int, timeout_s: float, poll_s: float = 0.2) -> float | None:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if count() >= target:
            return time.perf_counter() - start
        time.sleep(poll_s)
    return None


@contextlib.contextmanager
def fresh_database(server_url: str | None, name: str) -> Any:
    """A new, empty PostgreSQL database on server_url (yields its URL), dropped afterwards; None: SQLite."""
    if server_url is None:
        yield None
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(server_url.replace("postgresql://", "postgresql+psycopg://", 1))
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def measure(size: int, workers: int, timeout_s: float, workdir: Path, database_url: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {"devices": size, "workers": workers,
                              "database": "postgresql" if database_url else "sqlite"}  # fmt: skip
    with MosquittoBroker(workdir / "mosquitto") as broker, \
            fresh_database(database_url, f"edgefleet_fleet_{size}_{os.getpid()}") as db_url:  # fmt: skip
        record["fanout_floor_s"] = _round(fanout_floor(broker.url, size, timeout_s))
        settings = CloudSettings(data_dir=workdir / "cloud", api_port=0, mqtt_url=broker.url,
                                 **({"database_url": db_url} if db_url else {}))  # fmt: skip
        with CloudService(settings) as cloud:
            assert cloud.engine is not None and cloud.store is not None and cloud.deployer is not None
            model: PipelineResult = run_training_pipeline(cloud.engine, cloud.store, cloud.signer, MODEL)
            with Session(cloud.engine) as session:
                version = registry.get_model_version(session, MODEL_ID, model.version)
                assert version.id is not None
                record["artifact_bytes"] = {a.format: a.size_bytes for a in registry.artifacts_of(session, version.id)}
            ids = [f"fleet-{size}-{n:05d}" for n in range(size)]
            with Session(cloud.engine) as session:
                specs = [DeviceSpec(d, password=enroll_device(session, d).password) for d in ids]
                session.commit()
            sent = _count_cloud_bytes(cloud)
            fleet = ProcessFleet(specs, workers=workers, mqtt_url=broker.url, mqtt_protocol="3.1.1",
                                 trust_path=cloud.trust_chain_path, state_root=workdir / "devices")  # fmt: skip
            started = time.perf_counter()
            with fleet:
                record["start_s"] = round(time.perf_counter() - started, 2)
                record["connect_s"] = _round(wait_for(fleet.connected, size, timeout_s))
                sent[0] = 0
                start = time.perf_counter()
                cloud.deployer.deploy(DeploymentCreate(model_id=MODEL_ID, version=model.version, device_ids=ids))
                record["deploy_s"] = round(time.perf_counter() - start, 2)
                done = wait_for(lambda: fleet.running(model.version), size, timeout_s)
                record["rollout_s"] = None if done is None else round(time.perf_counter() - start, 2)
                record["cloud_bytes_per_device"] = round(sent[0] / size)
                grown = sum(now - base for now, base in zip(fleet.rss_kb(), fleet.baseline_rss_kb, strict=True))
                record["rss_kb_per_device"] = round(grown / size, 1)
                if done is None:
                    record["states"] = fleet.state_counts()
    floor, rollout = record.get("fanout_floor_s"), record.get("rollout_s")
    record["rollout_over_floor"] = round(rollout / floor, 2) if floor and rollout else None
    return record


def _count_cloud_bytes(cloud: CloudService) -> list[int]:
    """Count the payload bytes the cloud publishes (desired states, chunks, trust): [total]."""
    sent = [0]
    publish = cloud.transport.publish

    def counting(topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        sent[0] += len(payload)
        publish(topic, payload, qos=qos, retain=retain)

    cloud.transport.publish = counting
    return sent


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="fleet sizes, comma-separated (default 100,1000)")
    parser.add_argument("--workers", type=int, default=2, help="simulator worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per phase, seconds")
    parser.add_argument("--database-url", help="a PostgreSQL server for the cloud (default: SQLite)")
    args = parser.parse_args()
    records = []
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        with tempfile.TemporaryDirectory(prefix=f"fleet-{size}-") as tmp:
            record = measure(size, args.workers, args.timeout, Path(tmp), args.database_url)
        print(json.dumps(record), file=sys.stderr, flush=True)
        records.append(record)
    print(json.dumps({"records": records}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
