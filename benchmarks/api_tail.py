"""Where the console API's tail comes from while 200 agents report, and what CPU priorities do to it.

The set-up of benchmarks/rollout.py (a Mosquitto of its own, the cloud's core in this process with the API in a
process of its own as `edgefleet up` runs it, 200 real agents on one `AgentHost` and their traffic thread in
this process too), reduced to the API figures: GET /api/v1/devices at 100 wrk clients, kept-alive and a new
connection per request, while the fleet reports and then once it is idle. Candidates, alternating (--rounds,
every other round in reverse order) so that the machine's load hits them alike, differ only in the
scheduler's priorities (per-thread nice of this process's threads; going back to 0 between candidates needs
root):

  plain         everything at nice 0
  fleet_niced   the simulated fleet's threads (the agents' loop, their traffic, onnxruntime's) at --nice: they
                stand in for devices that are elsewhere in reality, so in the benchmark they should not take
                the CPU from the cloud; this is a benchmark choice, not a product change
  core_niced    the core's bulk threads (ingestion, chunk serving, its MQTT client, housekeeping: CORE_BULK_THREADS)
                at --nice, a product candidate (the core lowering its own bulk work so that the API processes win
                the CPU) measured here before building it; it was not kept (README, Benchmarks)
  both          the two together

Per measurement also: the API process's scheduler figures from /proc/<pid>/task/*/schedstat over the wrk
run: CPU seconds per second (`api_cpu`) and the share of its runnable time spent waiting for a core
(`api_runq_share`: run-queue wait / (run + wait)); and the machine's scheduler delay (wrk.SchedulerDelay).

    .venv/bin/python benchmarks/api_tail.py [--devices 200] [--rounds 2] [--seconds 5] [--nice 10]
        [--candidates plain,fleet_niced,core_niced,both]

Prints one JSON object last: {"rows": [...], "summary": {candidate: {figure: median}}, "loadavg": [...]}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rollout import MODEL_ID, Mosquitto, running, wait_for  # noqa: E402
from sqlmodel import Session  # noqa: E402
from wrk import run as wrk_run  # noqa: E402

from cloud.cli.operator_token import ensure_dev_token  # noqa: E402
from cloud.db.tables import DeploymentCreate  # noqa: E402
from cloud.heap import freeze_startup_heap  # noqa: E402
from cloud.identity.enrollment import enroll_device  # noqa: E402
from cloud.service import CloudService  # noqa: E402
from cloud.settings import CloudSettings  # noqa: E402
from cloud.training.pipeline import TrainingConfig, run_training_pipeline  # noqa: E402
from simulator.host import AgentHost, DeviceSpec  # noqa: E402
from simulator.traffic import Traffic  # noqa: E402

CANDIDATES = ("plain", "fleet_niced", "core_niced", "both")
# the core's bulk threads (cloud.mqtt.worker, cloud.periodic subclasses, paho's network thread); the API link, the
# rollout controller and the API supervisor keep their priority
CORE_BULK_THREADS = ("edgefleet-ingest", "edgefleet-chunks", "paho-mqtt-client-", "edgefleet-ownership",
                     "edgefleet-fanout-sweeper", "edgefleet-refresher", "edgefleet-alerts", "edgefleet-autoretrain",
                     "edgefleet-webhook")  # fmt: skip


def tids() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def set_nice(threads: set[int], nice: int) -> None:
    for tid in threads:
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, tid, nice)


def schedstat(pid: int) -> dict[str, tuple[int, int]]:
    """thread id -> (run ns, run-queue wait ns) of each of the process's threads."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
            found[tid] = (int(fields[0]), int(fields[1]))
    return found


def sched_delta(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(run ns, wait ns) between two `schedstat`s, over the threads in both (one that ended is left out)."""
    common = before.keys() & after.keys()
    return (sum(after[t][0] - before[t][0] for t in common), sum(after[t][1] - before[t][1] for t in common))


def measure(url: str, token: str, api_pid: int, seconds: float) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for keepalive, name in ((True, "keepalive"), (False, "new_conn")):
        stat0, at0 = schedstat(api_pid), time.monotonic()
        row = wrk_run(url, "/api/v1/devices", token, clients=100, seconds=seconds, keepalive=keepalive)
        run, wait = sched_delta(stat0, schedstat(api_pid))
        elapsed = time.monotonic() - at0
        assert row is not None, "wrk is not installed"
        figures.update({f"{name}_p50_ms": row["p50_ms"], f"{name}_p99_ms": row["p99_ms"], f"{name}_rps": row["rps"],
                        f"{name}_failed": row["failed"], f"{name}_sched_delay_p99_ms": row["sched_delay_p99_ms"],
                        f"{name}_api_cpu": round(run / 1e9 / elapsed, 2),
                        f"{name}_api_runq_share": round(wait / max(1, run + wait), 3)})  # fmt: skip
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--telemetry-period", type=float, default=1.0)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--phases", default="reporting,idle", help="reporting, idle or both (in that order)")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    candidates = args.candidates.split(",")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        broker_url = stack.enter_context(Mosquitto(Path(tmp))).url
        settings = CloudSettings(data_dir=Path(tmp) / "cloud", api_port=0, mqtt_port=0, mqtt_url=broker_url,
                                 database_url=args.database_url, api_processes=1)  # fmt: skip
        with CloudService(settings) as cloud:
            freeze_startup_heap()
            assert cloud.engine is not None and cloud.store is not None and cloud.deployer is not None
            assert cloud.api_processes is not None
            api_pid = cloud.api_processes.processes[0].pid
            assert api_pid is not None
            v1 = run_training_pipeline(cloud.engine, cloud.store, cloud.signer, TrainingConfig(model_id=MODEL_ID))
            ids = [f"bench-{i:04d}" for i in range(args.devices)]
            with Session(cloud.engine) as session:
                passwords = {d: enroll_device(session, d).password for d in ids}
                session.commit()
            found = ensure_dev_token(cloud.engine, settings.data_dir)
            assert found is not None
            token = found[0].read_text().strip()
            url = cloud.api_url or ""
            before = tids()  # the fleet's threads are those started after this
            fleet = AgentHost([DeviceSpec(d, password=passwords[d]) for d in ids], mqtt_url=cloud.mqtt_url or "",
                              trust_path=cloud.trust_chain_path, state_root=Path(tmp) / "devices",
                              mqtt_protocol="5")  # fmt: skip
            with fleet:
                traffic = Traffic(fleet, v1.split.X_test, rounds=10**9, period_s=args.telemetry_period,
                                  rows_per_round=10, phased=True).start()  # fmt: skip
                cloud.deployer.deploy(DeploymentCreate(model_id=MODEL_ID, version=v1.version, device_ids=ids))
                assert wait_for(lambda: len(running(fleet, v1.version)) == len(ids), 600) is not None
                time.sleep(3)
                # the fleet's threads: every thread started since the fleet (its loop, the traffic, onnxruntime's);
                # the core's bulk threads: those named so, started before the fleet
                core = {t.native_id for t in threading.enumerate()
                        if t.name.startswith(CORE_BULK_THREADS) and t.native_id in before}  # fmt: skip
                fleet_threads = tids() - before
                print(f"core threads {sorted(core)} fleet threads {sorted(fleet_threads)}", file=sys.stderr)
                try:
                    for phase in args.phases.split(","):
                        if phase == "idle":
                            traffic.stop()
                            time.sleep(2)
                        for round_ in range(args.rounds):
                            # ABBA: every other round in reverse, so that no candidate always follows another
                            for candidate in candidates if round_ % 2 == 0 else candidates[::-1]:
                                niced_fleet = candidate in ("fleet_niced", "both")
                                niced_core = candidate in ("core_niced", "both")
                                set_nice(fleet_threads & tids(), args.nice if niced_fleet else 0)
                                set_nice(core & tids(), args.nice if niced_core else 0)
                                time.sleep(1)
                                row = {"phase": phase, "round": round_, "candidate": candidate,
                                       **measure(url, token, api_pid, args.seconds),
                                       "load1": round(os.getloadavg()[0], 1)}  # fmt: skip
                                rows.append(row)
                                print(json.dumps(row), file=sys.stderr)
                finally:
                    traffic.stop()
                    set_nice(fleet_threads & tids(), 0)
                    set_nice(core & tids(), 0)
    summary: dict[str, Any] = {}
    for phase in args.phases.split(","):
        for candidate in candidates:
            mine = [r for r in rows if r["phase"] == phase and r["candidate"] == candidate]
            summary[f"{phase}/{candidate}"] = {
                k: round(statistics.median(r[k] for r in mine), 3) for k in mine[0]
                if k not in ("phase", "round", "candidate")}  # fmt: skip
    print(json.dumps({"devices": args.devices, "nice": args.nice, "rows": rows, "summary": summary,
                      "loadavg": [round(x, 2) for x in os.getloadavg()]}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
