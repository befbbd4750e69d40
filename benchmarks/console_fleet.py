"""Console API latency at 100 concurrent clients while a fleet of real agents reports, by where the cloud runs:

  in-process   the cloud (CloudService: ingestion, controller, API) in the benchmark's own process beside the
               agents' AgentHost loop and their traffic thread, as benchmarks/rollout.py runs it: one
               interpreter lock for the API, the cloud's workers and 200 agents
  up-api-thread  the cloud as `edgefleet up --api-processes 0` runs it (`python -m cloud.cli up`: its own process,
               the API in a thread of it beside ingestion and the controller: one interpreter lock), the agents in
               a `simulator.process_fleet` worker
  up           the same with `edgefleet up`'s default: the API in a process of its own (cloud.api.processes)
  up-api-x2    the same with two API processes (--api-processes 2)
  up-alerts-in-core  `edgefleet up` with the alert evaluation on a thread of the cloud's core process, as before
               (EDGEFLEET_ALERT_PROCESS=0); `up` runs it in a process of its own (cloud.monitoring.alert_process)
  NAME@base    candidate NAME with the cloud's code from --base (a checkout of the old code, e.g. `git worktree
               add /tmp/base main`): old and new side by side in one run, on the same machine load
  floor        a bare uvicorn + httptools + uvloop app (as the API runs) answering, on each path, the same bytes
               the API answered there (200 devices: 87 KB), in its own process, measured right after each
               candidate: what any API process costs for those answers at that moment

Each phase (candidate, fleet reporting then idle) is measured with wrk (benchmarks/wrk.py) at 100 clients,
kept-alive and with a new connection per request, on each path; the floor beside it. Candidates alternate
(--rounds) so that a change in the machine's load hits them alike. Mosquitto is the broker, SQLite the database
(or --database-url).

    .venv/bin/python benchmarks/console_fleet.py [--devices 200] [--rounds 1] [--seconds 5] [--tick 1.0]

Prints one JSON object last: {"rows": [...], "summary": {...}, "loadavg": [...]}.

Where the tail went (`up`, 200 agents reporting, SQLite and PostgreSQL, load 13-29 from other work on the 2
cores). py-spy on the API process during wrk: its event loop answers nearly every request from the fast lane
(cloud.api.fast_reads: no database, no core link; the loop's time is uvicorn writing the 87 KB device list);
the core link is not on these paths, and SQLite readers do not wait on ingestion's write lock (read-only
sessions begin deferred under WAL; tests/unit/cloud/api/test_api_pool.py). A timing wrapper on ReadCache in the
API process (a sitecustomize on PYTHONPATH, not in the tree) found the rest: the refresh-ahead reload of the
device list (50-70 ms of work on a quiet machine) and of the token record took 0.3-1.3 s of wall time on the
busy machine (a worker thread sharing the interpreter lock with the busy loop, and 1/8 of a core), longer than
the last quarter of the 1 s TTL in which it starts, so the value expired under its readers and all of them
waited for that reload: 660-1,560 requests per candidate run (6-12 of every 12 five-second windows) waited,
up to 1.2 s. Serving the expired value while its reload runs (ReadCache.stale_s, one more TTL) left 150-380 a
run, nearly all the first wave after a quiet spell (each measurement's first 100 requests: nothing fresh enough
to serve; a reload slower than 1.25 s, seen once at load 27, also still waits). Six old/new pairs (--base,
3 runs, 2 rounds): the median p99 while the fleet reports 1,027 -> 687, 727 -> 651, 460 -> 464 ms; fleet idle
441 -> 442, 370 -> 312, 375 -> 267 ms; the median p99 over the floor's right after it 2.1 -> 2.0, 1.9 -> 1.7,
1.4 -> 1.4. What stays is the machine: the floor's own keep-alive p99 ranged 44-1,350 ms between minutes at that
load, and any one p99 of ours went from 45 ms to 3.9 s with it; no p99 < 50 ms can be read at load 13-29.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import wrk  # noqa: E402  (benchmarks/wrk.py)
from rollout import MODEL_ID, Mosquitto, wait_for  # noqa: E402  (benchmarks/rollout.py)

CLIENTS = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(data_dir: Path, broker_url: str, devices: int, database_url: str | None) -> dict[str, Any]:
    """Keys, a trained and signed v1, `devices` enrolled devices and the development admin token, with a cloud
    started once in this process (then stopped)."""
    from sqlmodel import Session

    from cloud.cli.operator_token import ensure_dev_token
    from cloud.identity.enrollment import enroll_device
    from cloud.service import CloudService
    from cloud.settings import CloudSettings
    from cloud.training.pipeline import TrainingConfig, run_training_pipeline

    settings = CloudSettings(data_dir=data_dir, api_port=0, mqtt_url=broker_url, database_url=database_url)
    with CloudService(settings) as cloud:
        assert cloud.engine is not None and cloud.store is not None
        v1 = run_training_pipeline(cloud.engine, cloud.store, cloud.signer, TrainingConfig(model_id=MODEL_ID))
        ids = [f"bench-{i:04d}" for i in range(devices)]
        with Session(cloud.engine) as session:
            passwords = {d: enroll_device(session, d).password for d in ids}
            session.commit()
        found = ensure_dev_token(cloud.engine, settings.data_dir)
        assert found is not None
        return {"version": v1.version, "rows": v1.split.X_test[:10], "ids": ids, "passwords": passwords,
                "token": found[0].read_text().strip(), "trust": cloud.trust_chain_path}  # fmt: skip


def cloud_env(args: argparse.Namespace) -> dict[str, str]:
    """The settings both candidates run with (as EDGEFLEET_* variables, which `up` reads too)."""
    env = {"EDGEFLEET_ROLLOUT_TICK_S": str(args.tick)}
    if args.database_url:
        env["EDGEFLEET_DATABASE_URL"] = args.database_url
    return env


@contextlib.contextmanager
def in_process(data_dir: Path, broker_url: str, setup: dict[str, Any], args: argparse.Namespace) -> Iterator[Any]:
    """rollout.py's set-up: the cloud and the agents (and their traffic) in this process."""
    from cloud.heap import freeze_startup_heap
    from cloud.service import CloudService
    from cloud.settings import CloudSettings
    from protocols.v1 import messages_pb2 as pb
    from simulator.host import AgentHost, DeviceSpec
    from simulator.traffic import Traffic

    os.environ.update(cloud_env(args))
    settings = CloudSettings(data_dir=data_dir, api_port=0, mqtt_url=broker_url)
    with CloudService(settings) as cloud:
        freeze_startup_heap()
        specs = [DeviceSpec(d, password=setup["passwords"][d]) for d in setup["ids"]]
        with AgentHost(specs, mqtt_url=broker_url, trust_path=setup["trust"], state_root=data_dir.parent / "devices",
                       mqtt_protocol="5") as host:  # fmt: skip
            traffic: list[Traffic] = []

            class Fleet:
                api_url = cloud.api_url

                @staticmethod
                def running() -> int:
                    version = setup["version"]
                    return host.count(lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE
                                      and s.active_model.version == version)  # fmt: skip

                @staticmethod
                def report() -> None:
                    traffic.append(Traffic(host, setup["rows"], rounds=10**9, period_s=args.telemetry_period,
                                           rows_per_round=10).start())  # fmt: skip

                @staticmethod
                def quiet() -> None:
                    while traffic:
                        traffic.pop().stop()

            try:
                yield Fleet
            finally:
                Fleet.quiet()


@contextlib.contextmanager
def own_process(data_dir: Path, broker_url: str, setup: dict[str, Any], args: argparse.Namespace,
                api_processes: int = 1, env_extra: dict[str, str] | None = None,
                code: Path | None = None) -> Iterator[Any]:  # fmt: skip
    """`edgefleet up` in a process of its own (its API in `api_processes` more), the agents in a ProcessFleet
    worker; the cloud runs the code under `code` (default: this checkout's)."""
    from simulator.host import DeviceSpec
    from simulator.process_fleet import ProcessFleet

    port = free_port()
    code = code or Path(__file__).resolve().parents[1]
    env = {**os.environ, **cloud_env(args), **(env_extra or {}), "PYTHONPATH": str(code)}
    command = [sys.executable, "-m", "cloud.cli", "up", "--data-dir", str(data_dir), "--mqtt-url", broker_url,
               "--port", str(port), "--api-processes", str(api_processes)]  # fmt: skip
    process = subprocess.Popen(command, env=env, cwd=code, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)  # fmt: skip
    try:
        assert process.stdout is not None
        for line in process.stdout:  # `up` prints "running; Ctrl-C stops" once everything is up
            if "running;" in line:
                break
        else:
            raise RuntimeError(f"edgefleet up exited with {process.wait()}")
        specs = [DeviceSpec(d, password=setup["passwords"][d]) for d in setup["ids"]]
        with ProcessFleet(specs, workers=args.fleet_workers, mqtt_url=broker_url, trust_path=setup["trust"],
                          state_root=data_dir.parent / "devices", mqtt_protocol="5") as fleet:  # fmt: skip

            class Fleet:
                api_url = f"http://127.0.0.1:{port}"
                pid = process.pid

                @staticmethod
                def running() -> int:
                    return fleet.running(setup["version"])

                @staticmethod
                def report() -> None:
                    fleet.traffic(setup["rows"], args.telemetry_period)

                @staticmethod
                def quiet() -> None:
                    fleet.quiet()

            yield Fleet
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def floor_server(bodies: dict[str, bytes]) -> tuple[mp.process.BaseProcess, int]:
    context = mp.get_context("spawn")
    ports = context.Queue()
    process = context.Process(target=_serve_floor, args=(bodies, ports), daemon=True)
    process.start()
    return process, int(ports.get(timeout=60))


def _serve_floor(bodies: dict[str, bytes], ports: Any) -> None:
    """Each path's bytes, no routing, no auth, no database: uvicorn alone for answers of that size."""
    import uvicorn

    from cloud.api.listen import listen_socket

    answers = {path: [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
               for path, body in bodies.items()}  # fmt: skip

    async def app(scope: Any, receive: Any, send: Any) -> None:
        path = scope["path"] if scope["path"] in bodies else next(iter(bodies))
        await send({"type": "http.response.start", "status": 200, "headers": answers[path]})
        await send({"type": "http.response.body", "body": bodies[path]})

    sock = listen_socket("127.0.0.1", 0)
    ports.put(sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="error", lifespan="off", access_log=False, http="httptools", loop="uvloop")
    uvicorn.Server(config).run(sockets=[sock])


def measure(url: str, paths: list[str], token: str, seconds: float, **labels: Any) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        for keepalive in (True, False):
            row = wrk.run(url, path, token, clients=CLIENTS, seconds=seconds, keepalive=keepalive)
            assert row is not None, "wrk is not installed"
            rows.append({**labels, **row, "load1": round(os.getloadavg()[0], 2)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0, help="of wrk load per measurement")
    parser.add_argument("--tick", type=float, default=1.0, help="the rollout controller's period, s")
    parser.add_argument("--telemetry-period", type=float, default=1.0, help="s between telemetry windows")
    parser.add_argument("--fleet-workers", type=int, default=1, help="ProcessFleet workers (own-process)")
    parser.add_argument(
        "--candidates",
        default="in-process,up-api-thread,up",
        help="of in-process, up-api-thread, up, up-api-x2, up-alerts-in-core",
    )
    parser.add_argument("--paths", default="/api/v1/devices,/api/v1/models,/api/v1/devices/bench-0000/telemetry")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--base", type=Path, help="a checkout of the old code, for candidates named NAME@base")
    parser.add_argument("--hold", type=float, default=0.0, help="s to wait before measuring (to attach py-spy)")
    args = parser.parse_args()
    if not wrk.available():
        print("wrk is not installed", file=sys.stderr)
        return 2
    paths = args.paths.split(",")
    makers: dict[str, Callable[..., Any]] = {
        "in-process": in_process,
        "up-api-thread": partial(own_process, api_processes=0),
        "up": own_process,
        "up-api-x2": partial(own_process, api_processes=2),
        "up-alerts-in-core": partial(own_process, env_extra={"EDGEFLEET_ALERT_PROCESS": "0"}),
    }
    for name in [c for c in args.candidates.split(",") if c.endswith("@base")]:
        maker = makers[name.removesuffix("@base")]
        if args.base is None or maker is in_process:
            parser.error(f"{name}: needs --base, and a candidate whose cloud runs in its own process")
        makers[name] = partial(maker, code=args.base.resolve())
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp)) as broker:
        data_dir = Path(tmp) / "cloud"
        setup = prepare(data_dir, broker.url, args.devices, args.database_url)
        floor: mp.process.BaseProcess | None = None
        floor_url = ""
        deployed = False
        try:
            for n in range(args.rounds):
                for name in args.candidates.split(","):
                    with makers[name](data_dir, broker.url, setup, args) as fleet:
                        api = httpx.Client(base_url=fleet.api_url, timeout=30,
                                           headers={"Authorization": f"Bearer {setup['token']}"})  # fmt: skip
                        if not deployed:
                            answer = api.post("/api/v1/deployments", json={"model_id": MODEL_ID,
                                                                           "version": setup["version"],
                                                                           "device_ids": setup["ids"]})  # fmt: skip
                            answer.raise_for_status()
                            deployed = True
                        took = wait_for(lambda f=fleet: f.running() == args.devices, 600, poll_s=0.5)
                        assert took is not None, "the fleet did not reach v1"
                        for path in paths:  # each list once through the full app (the fast lane learns it)
                            api.get(path).raise_for_status()
                        if floor is None:  # the floor answers what the API answers (wrk asks no gzip)
                            floor, floor_port = floor_server({p: api.get(p).content for p in paths})
                            floor_url = f"http://127.0.0.1:{floor_port}"
                        for state in ("reporting", "idle"):
                            if state == "reporting":
                                fleet.report()
                                time.sleep(3 * args.telemetry_period)
                            else:
                                fleet.quiet()
                                time.sleep(2)
                            if args.hold:
                                print(f"holding {args.hold} s: {fleet.api_url} {data_dir} pid "
                                      f"{getattr(fleet, 'pid', os.getpid())}", file=sys.stderr, flush=True)  # fmt: skip
                                time.sleep(args.hold)
                            labels = {"round": n, "fleet": state}
                            rows += measure(fleet.api_url, paths, setup["token"], args.seconds, candidate=name,
                                            **labels)  # fmt: skip
                            rows += measure(floor_url, paths, setup["token"], args.seconds, candidate="floor",
                                            beside=name, **labels)  # fmt: skip
                        api.close()
        finally:
            if floor is not None:
                floor.terminate()
    print(json.dumps({"rows": rows, "summary": summary(rows), "loadavg": [round(x, 2) for x in os.getloadavg()]}))
    return 0


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The worst p99 (and its p50) of each candidate, fleet state and connection kind, over paths and rounds;
    for a candidate also the worst ratio of its p99 to the floor's on the same path measured right after it."""
    out: dict[str, Any] = {}
    floors = {(r["beside"], r["round"], r["fleet"], r["keepalive"], r["path"]): r["p99_ms"]
              for r in rows if r["candidate"] == "floor"}  # fmt: skip
    for row in rows:
        who = row["candidate"] if row["candidate"] != "floor" else f"floor beside {row['beside']}"
        key = f"{who} {row['fleet']} {'keepalive' if row['keepalive'] else 'new_conn'}"
        worst = out.get(key)
        if worst is None or row["p99_ms"] > worst["p99_ms"]:
            out[key] = {**(worst or {}), "p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"], "path": row["path"],
                        "load1": row["load1"]}  # fmt: skip
        floor = floors.get((row["candidate"], row["round"], row["fleet"], row["keepalive"], row["path"]))
        if floor:
            ratio = round(row["p99_ms"] / floor, 2)
            out[key]["worst_p99_over_floor"] = max(out[key].get("worst_p99_over_floor", 0), ratio)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
