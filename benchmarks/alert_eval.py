"""An alert tick over a fleet's telemetry, and what it costs the cloud's core process, by where it runs:

  main-in-core     the AlertMonitor of the main branch (or --old-root), evaluating on the core's thread
  in-core          this tree's AlertMonitor evaluating on the core's thread (EDGEFLEET_ALERT_PROCESS=0)
  process          this tree's AlertMonitor asking an AlertProcess (what `edgefleet up` runs)

One SQLite database (or --database-url) holds --devices enrolled devices with --windows one-minute telemetry
windows each of a registered model (--features features of 10 bins, a prediction histogram), a tenth of the
devices shifted on one feature (so a drift alert is raised, named and hinted). Each candidate runs in a fresh
interpreter (the old tree's code on its PYTHONPATH), warms up with one tick, then times --ticks ticks while a
probe thread in the core asks for the interpreter lock every 5 ms: how late it gets it (p99, max) is what
ingestion, the controller and the core's answers to the API processes wait. CPU is counted for the core and
for the alert process apart. Candidates alternate over --rounds.

    .venv/bin/python benchmarks/alert_eval.py [--devices 200] [--windows 60] [--rounds 2]

Prints one JSON object last: {"rows": [...], "summary": {...}, "loadavg": [...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL_ID, BINS = "fleetmodel", 10
CANDIDATES = ("main-in-core", "in-core", "process")


def prepare(data_dir: Path, database_url: str | None, devices: int, windows: int, features: int, now: int) -> str:
    import hashlib

    from sqlmodel import Session

    from cloud.identity.enrollment import enroll_device
    from cloud.monitoring import Ingestor
    from cloud.service import CloudService
    from cloud.settings import CloudSettings
    from protocols.topics import Channel, device_topic
    from protocols.v1 import messages_pb2 as pb

    settings = CloudSettings(data_dir=data_dir, api_port=0, alert_interval_s=0, database_url=database_url)
    artifact = b"model bytes" * 100
    with CloudService(settings) as cloud:
        assert cloud.engine is not None
        manifest = pb.Manifest(model_id=MODEL_ID, metrics={"accuracy": 0.95})
        manifest.artifacts.add(name="model.onnx", format=pb.ARTIFACT_FORMAT_ONNX, runtime="onnxruntime",
                               sha256=hashlib.sha256(artifact).hexdigest(), size_bytes=len(artifact))  # fmt: skip
        for index in range(features):
            manifest.reference.features.add(index=index, bin_edges=list(range(BINS + 1)), counts=[100] * BINS)
        manifest.reference.predictions.labels.extend(["a", "b"])
        manifest.reference.predictions.counts.extend([50, 50])
        version = cloud.register_model_version(manifest, {"model.onnx": artifact}).version
        ids = [f"dev-{i:05d}" for i in range(devices)]
        with Session(cloud.engine) as session:
            for d in ids:
                enroll_device(session, d)
            session.commit()
        rng = random.Random(7)
        shifted = [0.02] * (BINS // 2) + [0.18] * (BINS // 2)

        def counts(drifted: bool) -> list[int]:
            weights = shifted if drifted else [0.1] * BINS
            picks = rng.choices(range(BINS), weights=weights, k=100)
            return [picks.count(b) for b in range(BINS)]

        ingestor = Ingestor(cloud.engine, clock=lambda: now, fleet=cloud.fleet)
        for i, d in enumerate(ids):
            batch = []
            for w in range(windows):
                end = now - (windows - w) * 60_000
                window = pb.TelemetryWindow(
                    schema_version=1, device_id=d, seq=w + 1, window_start_ms=end - 60_000, window_end_ms=end,
                    model=pb.ModelRef(model_id=MODEL_ID, version=version), inference_count=100,
                    features=[pb.FeatureSketch(index=f, counts=counts(f == 1 and i % 10 == 0))
                              for f in range(features)],
                    predictions=pb.PredictionProfile(labels=["a", "b"], counts=[50, 50]),
                )  # fmt: skip
                batch.append((device_topic(d, Channel.TELEMETRY, fleet=cloud.fleet), window.SerializeToString()))
            ingestor.process(batch)
    return settings.database


class Probe:
    """A thread that asks for the interpreter lock every 5 ms and records how late it got it."""

    def __init__(self) -> None:
        self.late_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            asked = time.perf_counter()
            time.sleep(0.005)
            self.late_ms.append((time.perf_counter() - asked - 0.005) * 1000)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def run_candidate(name: str, database_url: str, ticks: int, now: int) -> dict[str, Any]:
    import psutil

    from cloud.db.engine import make_engine
    from cloud.monitoring.alert_monitor import AlertMonitor

    engine = make_engine(database_url)
    options: dict[str, Any] = {}
    if name == "process":
        from cloud.monitoring.alert_process import AlertProcess

        options["evaluator"] = AlertProcess(database_url).start()
    monitor = AlertMonitor(engine, clock=lambda: now, **options)
    monitor.tick()  # warm-up: imports, the child's start, the database's cache
    child = psutil.Process(options["evaluator"].process.pid) if options else None
    core_cpu, child_cpu = time.process_time(), sum(child.cpu_times()[:2]) if child else 0.0
    started = time.perf_counter()
    with Probe() as probe:
        for _ in range(ticks):
            monitor.tick()
    wall = (time.perf_counter() - started) / ticks
    core_cpu = (time.process_time() - core_cpu) / ticks
    child_cpu = ((sum(child.cpu_times()[:2]) - child_cpu) / ticks) if child else 0.0
    monitor.stop()
    from sqlmodel import Session

    from cloud.monitoring import alerts

    with Session(engine) as session:  # raised by the first candidate's warm-up, held since
        active = len(alerts.listing(session, include_cleared=False))
    late = sorted(probe.late_ms)
    return {
        "candidate": name, "tick_s": round(wall, 3), "core_cpu_s": round(core_cpu, 3),
        "alert_process_cpu_s": round(child_cpu, 3), "alerts_active": active,
        "probe_late_p50_ms": round(statistics.median(late), 2),
        "probe_late_p99_ms": round(late[max(0, -(-99 * len(late) // 100) - 1)], 2),
        "probe_late_max_ms": round(late[-1], 2),
        "probe_waits_over_50ms": sum(1 for x in late if x > 50), "load1": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--windows", type=int, default=60, help="one-minute windows per device")
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--ticks", type=int, default=2, help="timed ticks per candidate (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--old-root", default="/work/main", help="the tree main-in-core runs")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--run", help=argparse.SUPPRESS)  # one candidate, in this interpreter
    parser.add_argument("--now", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_candidate(args.run, args.database_url, args.ticks, args.now)))
        return 0
    sys.path.insert(0, str(ROOT))
    now = int(time.time() * 1000)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        database_url = prepare(Path(tmp) / "cloud", args.database_url, args.devices, args.windows, args.features, now)
        for n in range(args.rounds):
            for name in args.candidates.split(","):
                root = args.old_root if name == "main-in-core" else str(ROOT)
                env = {**os.environ, "PYTHONPATH": root}
                command = [sys.executable, str(Path(__file__).resolve()), "--run", name, "--database-url",
                           database_url, "--ticks", str(args.ticks), "--now", str(now)]  # fmt: skip
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd=root)
                if done.returncode != 0:
                    print(done.stderr[-3000:], file=sys.stderr)
                    return 1
                rows.append({"round": n, **json.loads(done.stdout.strip().splitlines()[-1])})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    summary = {}
    for name in args.candidates.split(","):
        mine = [r for r in rows if r["candidate"] == name]
        summary[name] = {k: statistics.median(r[k] for r in mine) for k in (
            "tick_s", "core_cpu_s", "alert_process_cpu_s", "probe_late_p99_ms", "probe_late_max_ms")}  # fmt: skip
    print(json.dumps({"rows": rows, "summary": summary, "loadavg": [round(x, 2) for x in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
