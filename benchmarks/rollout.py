"""Staged rollouts on a simulated fleet of real agents (the embedded broker, SQLite, the real controller):

  all_at_once_s      one deployment of a good new version, until every device runs it
  staged_rollout_s   a canary + growing waves (dwell 0) of another good version, until every device runs it
  bad model          a version that passes its self-test but predicts only two classes in the field (a
                     one-stump random forest): is it stopped in its first wave, and how many gate periods
                     (controller ticks) pass from its first canary activation until they run the previous
                     model again; --bad-trials times each, alternating, the controller woken when telemetry
                     is stored (as `edgefleet up` runs it), its gates with the early sequential breach
                     (recovered_in_gate_periods) and without it, waiting for min devices x min inferences
                     (recovered_in_gate_periods_fixed_evidence); --tick-only adds the controller judging on
                     its tick only (_tick_only); --unprioritised the ingestor storing the canaries' windows in
                     arrival order rather than ahead of the rest of the fleet's (_unprioritised); --gapped-wake
                     the wave's windows waking the controller no sooner than any telemetry does (_gapped_wake); with
                     --traffic both (the default) also with every device's
                     requests and window in one burst each period (_synchronised; the others run each device
                     on its own phase of the period); medians and ranges, each trial listed. A gate period is the
                     controller's tick (--tick); woken by telemetry it also steps in between (<= 5/s)
  api_p50/p99_ms     GET /api/v1/devices at 100 concurrent kept-alive clients while the fleet reports, the API
                     in a process of its own as `edgefleet up` runs it (--api-processes 0: in this process's
                     thread, beside the cloud's workers and the agents; benchmarks/console_fleet.py compares
                     the set-ups side by side, with the agents in a process of their own);
                     api_new_conn_p50/p99_ms the same with a new connection per request;
                     api_idle_fleet_* the same once the agents are idle. The clients are wrk (C,
                     benchmarks/wrk.py) when installed, else 100 httpx threads in a process of their own,
                     kept-alive only (`api_generator` says which). For these figures the simulated fleet's
                     threads run at nice --fleet-nice (10; they stand in for devices elsewhere: FleetPriority;
                     0: as before); the rollout figures before them at 0, as the agents' speed is theirs too

    .venv/bin/python benchmarks/rollout.py [--devices 200] [--tick 1.0] [--telemetry-period 1.0] [--bad-trials 2]
        [--traffic phased|synchronised|both] [--bad-only] [--tick-only] [--unprioritised]
        [--gapped-wake] [--alert-in-process] [--broker mosquitto|embedded] [--database-url postgresql+psycopg://...]

The cloud runs as `edgefleet up` runs it: the console API and the alert evaluation each in a process of its own
(--api-processes 0, --alert-in-process: in the cloud's, as CloudService does by default; the evaluation then held
the interpreter lock for seconds once a minute, and the trial it hit waited that long).
The broker defaults to a Mosquitto of its own (a production part; the binary must be installed). The
devices are real agents on one `simulator.host.AgentHost` (one asyncio loop, one MQTT connection each, models
shared per artifact digest); `SimulatedFleet`'s paho clients stopped at ~140 agents per process (select()
cannot watch a descriptor numbered 1024 or above). --database-url runs the cloud on PostgreSQL instead of
its SQLite file.

Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.fleet_traffic

import httpx  # noqa: E402
from sqlmodel import Session, col, select  # noqa: E402
from support.fleet_traffic import Traffic  # noqa: E402
from wrk import run as wrk_run  # noqa: E402  (benchmarks/wrk.py)

from cloud.cli.operator_token import ensure_dev_token  # noqa: E402
from cloud.db.tables import DeploymentCreate, TelemetryRecord  # noqa: E402
from cloud.heap import freeze_startup_heap  # noqa: E402
from cloud.identity.enrollment import enroll_device  # noqa: E402
from cloud.rollout.records import Rollout, RolloutDecision  # noqa: E402
from cloud.service import CloudService  # noqa: E402
from cloud.settings import CloudSettings  # noqa: E402
from cloud.training.pipeline import TrainingConfig, run_training_pipeline  # noqa: E402
from protocols.v1 import messages_pb2 as pb  # noqa: E402
from simulator.devices import DeviceGroup  # noqa: E402
from simulator.host import AgentHost, DeviceSpec  # noqa: E402

MODEL_ID = "digits-classifier"


def running(fleet: DeviceGroup, version: str, among: list[str] | None = None) -> set[str]:
    found = set()
    for d in fleet.devices if among is None else among:
        status = fleet.devices[d].agent.status()
        if status.update_state == pb.UPDATE_STATE_ACTIVE and status.active_model.version == version:
            found.add(d)
    return found


def wait_for(predicate: Any, timeout_s: float, poll_s: float = 0.1) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(poll_s)
    return None


def api_latency(url: str, token: str, clients: int = 100, per_client: int = 10) -> tuple[float, float, float]:
    """p50 and p99 (ms) of GET /api/v1/devices with `clients` concurrent keep-alive clients; errors share."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()

    def client(_: int) -> None:
        nonlocal failures
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            for _ in range(per_client):
                start = time.perf_counter()
                try:
                    ok = http.get("/api/v1/devices").status_code == 200
                except httpx.HTTPError:  # a timeout counts as a failure, at the time it took
                    ok = False
                with lock:
                    latencies.append((time.perf_counter() - start) * 1000)
                    failures += not ok

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))], failures / max(1, len(ordered))


def api_figures(url: str, token: str, prefix: str = "api") -> dict[str, Any]:
    """p50/p99 of GET /api/v1/devices at 100 concurrent clients, from wrk when installed (keep-alive and a new
    connection per request), else from `api_latency` in a process of its own (keep-alive only)."""
    figures: dict[str, Any] = {}
    for keepalive, name in ((True, prefix), (False, f"{prefix}_new_conn")):
        row = wrk_run(url, "/api/v1/devices", token, clients=100, seconds=5, keepalive=keepalive)
        if row is None:
            break
        figures.update({f"{name}_p50_ms": row["p50_ms"], f"{name}_p99_ms": row["p99_ms"], f"{name}_rps": row["rps"],
                        f"{name}_failed_share": round(row["failed"] / max(1, row["requests"]), 4)})  # fmt: skip
    if figures:
        return {"api_generator": "wrk", **figures}
    # the clients in a process of their own: 100 client threads sharing this process's GIL with the server and
    # the agents would measure the load generator as much as the API
    with mp.get_context("spawn").Pool(1) as pool:
        p50, p99, failed = pool.apply(api_latency, (url, token))
    return {"api_generator": "python-httpx-threads", f"{prefix}_p50_ms": round(p50, 1),
            f"{prefix}_p99_ms": round(p99, 1), f"{prefix}_failed_share": failed}


def bad_model_trial(cloud: CloudService, fleet: DeviceGroup, api: httpx.Client, ids: list[str], bad: str,
                    good: str, policy: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """A canary of a version that misbehaves in the field, on a fleet running `good`: is it stopped in its
    first wave, when did the controller decide (s after the first canary activated), and when was every
    device back on `good` (s, and in gate periods)."""
    assert cloud.engine is not None and cloud.rollouts is not None
    steps_ms: list[float] = []
    step = cloud.rollouts.step

    acted_ms: dict[str, float] = {}  # the step that opened the wave, the one that rolled back: ms each took
    acted_at_ms: dict[str, float] = {}  # ... and when each ended (wall clock, ms)

    def timed_step(deployment_id: str) -> Any:  # how long the controller's steps take, while this trial runs
        begun = time.perf_counter()
        action = None
        try:
            action = step(deployment_id)
            return action
        finally:
            steps_ms.append((time.perf_counter() - begun) * 1000)
            if action is not None and action.value in ("open_wave", "rollback"):
                acted_ms[action.value] = steps_ms[-1]
                acted_at_ms[action.value] = time.time() * 1000  # the step publishes its desired states last

    cloud.rollouts.step = timed_step  # type: ignore[method-assign]
    posted_ms = int(time.time() * 1000)
    started = api.post("/api/v1/rollouts", json={
        "deployment": {"model_id": MODEL_ID, "version": bad, "device_ids": ids}, "rollout": policy}).json()  # fmt: skip
    with Session(cloud.engine) as session:
        opened = session.get(Rollout, started["deployment_id"])
        assert opened is not None
        canaries = list(opened.waves[0])  # only they can change: polling 200 agents' status took the GIL from them
    seen_first: set[str] = set()

    def activated_or_over() -> bool:  # over: the whole episode can fall between two polls of a starved thread
        seen_first.update(running(fleet, bad, canaries))
        return bool(seen_first) or "rollback" in acted_at_ms

    first_wave = wait_for(activated_or_over, args.timeout, poll_s=0.02)
    activated, activated_ms = time.monotonic(), time.time() * 1000
    from_events = None
    if first_wave is not None and not seen_first:  # missed (at load 17 once in 4 trials): the agents' events say
        from_events = activations(cloud, canaries, bad, good, since_ms=posted_ms, timeout_s=args.timeout)
        if from_events is not None:
            activated_ms = from_events[0]
            activated = time.monotonic() - (time.time() * 1000 - activated_ms) / 1000
    back_at: dict[str, float] = {}  # canary -> when it was first seen on `good` again after running `bad`

    def recovered() -> bool:
        now, on_bad, on_good = time.monotonic(), running(fleet, bad, canaries), running(fleet, good, canaries)
        back_at.update({d: now for d in on_good if d not in back_at and d in seen_bad})
        bad_at.update({d: now for d in on_bad if d not in bad_at})
        seen_bad.update(on_bad)
        return not on_bad and len(on_good) == len(canaries)

    seen_bad: set[str] = set()
    bad_at: dict[str, float] = {}  # canary -> when it was first seen running `bad`
    back = wait_for(recovered, args.timeout, poll_s=0.02)
    recovered_s = None if back is None else time.monotonic() - activated
    if from_events is not None:
        back_at = {d: activated + (at - activated_ms) / 1000 for d, at in from_events[1].items()}
        bad_at = {d: activated for d in canaries}  # when each activated is not read: only the first matters
        recovered_s = max(back_at.values()) - activated
    recorded_ms = recorded_at_ms(cloud, canaries, good, args.timeout) if back is not None else None
    cloud.rollouts.step = step  # type: ignore[method-assign]
    with Session(cloud.engine) as session:
        rollout = session.get(Rollout, started["deployment_id"])
        assert rollout is not None
        rollback = select(RolloutDecision.at_ms).where(RolloutDecision.deployment_id == rollout.deployment_id,
                                                       RolloutDecision.action == "rollback")  # fmt: skip
        decided = session.exec(rollback).first()
        judgeable = judgeable_at_ms(session, bad, policy["gates"], since_ms=int(activated_ms) - 1000)
        first_window = judgeable_at_ms(session, bad, {"min_devices": 1, "min_inferences": 1},
                                       since_ms=int(activated_ms) - 1000)  # fmt: skip
        stopped = rollout.state == "rolled_back" and rollout.current_wave == 0
        timeline = trial_timeline(session, canaries, bad, good, rollout, int(activated_ms) - 1000, {
            "active": activated_ms, "decided": decided, "rollback_published": acted_at_ms.get("rollback"),
            "first_back": None if not back_at else activated_ms + (min(back_at.values()) - activated) * 1000,
            "last_back": None if not back_at else activated_ms + (max(back_at.values()) - activated) * 1000,
            "recorded": recorded_ms})  # fmt: skip
        # the wave's spread: the early breach needs a second canary's windows (gates.EARLY_MIN_DEVICES)
        seen = sorted(bad_at.values())
        timeline["canaries_seen_bad"] = len(seen)
        timeline["dated_by_events"] = from_events is not None
        timeline["second_active_s"] = round(seen[1] - activated, 2) if len(seen) > 1 else None
        timeline["last_active_s"] = round(seen[-1] - activated, 2) if seen else None
        return {
            "stopped_in_first_wave": bool(first_wave is not None and stopped), "reason": rollout.reason,
            "decided_s": None if decided is None else round((decided - activated_ms) / 1000, 2),
            # where the time went: until the first bad-model window was stored, until the gates had the fixed
            # minimum evidence (the early breach may decide before: a negative controller_lag_s), the
            # controller after that, and from its decision until every device ran the previous model again
            "first_window_s": None if first_window is None else round((first_window - activated_ms) / 1000, 2),
            "judgeable_s": None if judgeable is None else round((judgeable - activated_ms) / 1000, 2),
            "controller_lag_s": None if None in (decided, judgeable) else round((decided - judgeable) / 1000, 2),
            "rollback_s": None if None in (decided, recovered_s) else round(activated_ms / 1000 + (recovered_s or 0)
                                                                              - decided / 1000, 2),
            # from the decision: the first and the last canary seen back (the rollback's spread over devices)
            "first_back_s": None if decided is None or not back_at else round(
                activated_ms / 1000 + min(back_at.values()) - activated - decided / 1000, 2),
            "last_back_s": None if decided is None or not back_at else round(
                activated_ms / 1000 + max(back_at.values()) - activated - decided / 1000, 2),
            "open_step_ms": round(acted_ms.get("open_wave", 0), 1),
            "rollback_step_ms": round(acted_ms.get("rollback", 0), 1),
            "steps": len(steps_ms), "step_median_ms": round(statistics.median(steps_ms), 1) if steps_ms else None,
            "step_max_ms": round(max(steps_ms), 1) if steps_ms else None,
            "recovered_s": None if recovered_s is None else round(recovered_s, 2),
            "recovered_in_gate_periods": None if recovered_s is None else round(recovered_s / args.tick, 1),
            **timeline,
        }  # fmt: skip


# the recovery's stages in order, each timed from the first bad-model activation (s): the first window of the bad
# model holding calls closed (published: the traffic reached a canary; an agent sends empty windows for a model
# it just activated until its requests come), that window stored, the stored windows enough for the gates to
# breach (replayed: the real gates on the windows stored so far), the controller's rollback decision, its step's
# end (the rollback desired states published), the first and the last canary seen back on the previous model,
# every canary's row saying so
STAGES = ("first_served", "served_stored", "breach_evidence", "decided", "rollback_published", "first_back",
          "last_back", "recorded")  # fmt: skip


def trial_timeline(session: Session, canaries: list[str], bad: str, good: str, rollout: Rollout, since_ms: int,
                   marks: dict[str, float | None]) -> dict[str, Any]:  # fmt: skip
    """`timeline_s` (stage -> s since the bad model's first activation), `stage_s` (each stage's own share:
    since the stage before), `dominant_stage`, and the bad model's windows' counts at the breach evidence."""
    rows = session.exec(select(TelemetryRecord).where(col(TelemetryRecord.device_id).in_(canaries),
                                                      TelemetryRecord.model_version == bad,
                                                      TelemetryRecord.received_at_ms >= since_ms)
                        .order_by(col(TelemetryRecord.received_at_ms))).all()  # fmt: skip
    served = [r for r in rows if r.inference_count + r.error_count]
    first = min(served, key=lambda r: r.window_end_ms, default=None)
    at: dict[str, float | None] = {"first_served": None if first is None else first.window_end_ms,
                                   "served_stored": None if first is None else first.received_at_ms}  # fmt: skip
    evidence = breach_evidence(session, canaries, good, rollout, rows)
    at["breach_evidence"] = evidence[0] if evidence else None
    at.update({k: marks[k] for k in STAGES if k in marks})
    active = marks["active"] or 0.0
    timeline = {k: None if at.get(k) is None else round((at[k] - active) / 1000, 2) for k in STAGES}  # type: ignore[operator]
    stage_s: dict[str, float | None] = {}
    before = 0.0
    for k in STAGES:
        value = timeline[k]
        stage_s[k] = None if value is None else round(value - before, 2)
        before = value if value is not None else before
    known = {k: v for k, v in stage_s.items() if v is not None}
    return {"timeline_s": timeline, "stage_s": stage_s,
            "dominant_stage": max(known, key=known.__getitem__) if known else None,
            "breach_evidence_windows": evidence[1] if evidence else None,
            "breach_evidence_inferences": evidence[2] if evidence else None,
            "breach_evidence_devices": evidence[3] if evidence else None}  # fmt: skip


def breach_evidence(session: Session, canaries: list[str], good: str, rollout: Rollout,
                    rows: Sequence[TelemetryRecord]) -> tuple[int, int, int, int] | None:  # fmt: skip
    """When the canaries' bad-model windows stored so far (in storing order) first made the rollout's own gates
    breach, against the controller's baseline (the previous model on the canaries before the wave opened):
    (ms, windows, inferences, devices), or None."""
    from dataclasses import replace

    from cloud.rollout.figures import arm_figures, figures_for
    from cloud.rollout.gates import GatePolicy, InstallTally, judge

    opened = rollout.wave_opened_ms or 0
    baseline = figures_for(session, canaries, MODEL_ID, good, since_ms=opened - 86_400_000, until_ms=opened)
    policy = GatePolicy(**rollout.gates)
    policy = replace(policy, min_devices=min(policy.min_devices, len(canaries)))
    window_rows = [r for r in rows if r.window_end_ms >= opened]
    for i, row in enumerate(window_rows):
        if i + 1 < len(window_rows) and window_rows[i + 1].received_at_ms == row.received_at_ms:
            continue  # one batch: judged once it is all stored
        new = arm_figures(window_rows[: i + 1])
        if judge(policy, InstallTally(len(canaries), 0), new, baseline).decision.value == "breach":
            return row.received_at_ms, i + 1, new.inferences + new.errors, new.devices
    return None


def recorded_at_ms(cloud: CloudService, canaries: list[str], good: str, timeout_s: float) -> float | None:
    """When every canary's device row (the cloud's record) names `good` active again (wall ms), or None."""
    from cloud.db.tables import Device

    assert cloud.engine is not None

    def recorded() -> bool:
        with Session(cloud.engine) as session:
            found = session.exec(select(Device.active_version).where(col(Device.id).in_(canaries))).all()
        return len(found) == len(canaries) and all(v == good for v in found)

    return None if wait_for(recorded, timeout_s, poll_s=0.05) is None else time.time() * 1000


def activations(cloud: CloudService, canaries: list[str], bad: str, good: str, *, since_ms: int,
                timeout_s: float) -> tuple[float, dict[str, float]] | None:  # fmt: skip
    """From the canaries' own ACTIVATED events since since_ms (their clock, stored once the outbox sends them):
    when the first activated `bad`, and when each that did activated `good` again after it (wall ms), or None."""
    from cloud.db.tables import EventRecord

    assert cloud.engine is not None
    found: tuple[float, dict[str, float]] | None = None

    def read() -> bool:
        nonlocal found
        with Session(cloud.engine) as session:
            rows = session.exec(select(EventRecord).where(col(EventRecord.device_id).in_(canaries),
                                                          EventRecord.kind == "activated",
                                                          EventRecord.ts_ms >= since_ms,
                                                          col(EventRecord.model_version).in_([bad, good]))
                                .order_by(col(EventRecord.ts_ms))).all()  # fmt: skip
        on_bad: dict[str, int] = {}
        back: dict[str, float] = {}
        for row in rows:
            if row.model_version == bad:
                on_bad.setdefault(row.device_id, row.ts_ms)
            elif row.device_id in on_bad and row.device_id not in back:
                back[row.device_id] = row.ts_ms
        if on_bad and set(on_bad) <= set(back):
            found = (min(on_bad.values()), back)
        return found is not None

    return found if wait_for(read, timeout_s, poll_s=0.2) is not None else None


def judgeable_at_ms(session: Session, version: str, gates: dict[str, Any], since_ms: int) -> int | None:
    """When the telemetry of `version` stored since since_ms first held the gates' minimum devices and
    inferences (ms)."""
    rows = session.exec(select(TelemetryRecord).where(TelemetryRecord.model_version == version,
                                                      TelemetryRecord.received_at_ms >= since_ms)
                        .order_by(col(TelemetryRecord.received_at_ms))).all()  # fmt: skip
    devices: set[str] = set()
    inferences = 0
    for row in rows:
        devices.add(row.device_id)
        inferences += row.inference_count + row.error_count
        if len(devices) >= gates["min_devices"] and inferences >= gates["min_inferences"]:
            return row.received_at_ms
    return None


class FleetPriority:
    """The simulated fleet's threads (every thread of this process started after this object: the agents' loop,
    their traffic, onnxruntime's) at a lower CPU priority (per-thread nice). The agents stand in for devices that
    are elsewhere in reality, so they should not take the cores from the cloud under test, the console API's
    process first (benchmarks/api_tail.py). A benchmark choice, not a product one; `apply` nices the threads
    running then (raising nice is one way without privileges)."""

    def __init__(self, nice: int) -> None:
        self.nice = nice
        self._before = self._threads()

    @staticmethod
    def _threads() -> set[int]:
        return {int(t) for t in os.listdir("/proc/self/task")} if os.path.isdir("/proc/self/task") else set()

    def apply(self) -> None:
        for tid in self._threads() - self._before if self.nice > 0 else ():
            with contextlib.suppress(OSError):  # ended meanwhile
                if os.getpriority(os.PRIO_PROCESS, tid) < self.nice:
                    os.setpriority(os.PRIO_PROCESS, tid, self.nice)


class Mosquitto:
    """A mosquitto of the benchmark's own on a free loopback port (anonymous: the benchmark measures rollout,
    not broker authentication)."""

    def __init__(self, workdir: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.config = workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 100000"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who may not read the temporary folder
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def __enter__(self) -> Mosquitto:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([binary, "-c", str(self.config)], stderr=subprocess.DEVNULL)
        import socket

        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def __exit__(self, *_exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--tick", type=float, default=1.0, help="controller period (the gate period), s")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--broker", choices=("mosquitto", "embedded"), default="mosquitto")
    parser.add_argument("--telemetry-period", type=float, default=1.0, help="s between telemetry windows")
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in the temporary folder")
    parser.add_argument("--api-processes", type=int, default=1,
                        help="the console API in this many processes of its own, as `edgefleet up` runs it (0: in a "
                             "thread of this process, beside the cloud's workers and the 200 agents)")  # fmt: skip
    parser.add_argument("--alert-in-process", action="store_true",
                        help="the alert evaluation on the cloud's interpreter (CloudService's default) rather than in "
                             "a process of its own, as `edgefleet up` runs it: once a minute it held the lock for "
                             "seconds, and a trial it hit waited that long (a window, the rollback)")  # fmt: skip
    parser.add_argument("--bad-trials", type=int, default=2, help="bad-model canaries per candidate")
    parser.add_argument("--fleet-nice", type=int, default=10,
                        help="the simulated fleet's threads at this nice for the API figures (0: as started; see "
                             "FleetPriority)")  # fmt: skip
    parser.add_argument("--tick-only", action="store_true",
                        help="also the bad-model trials with the controller judging on its tick only")
    parser.add_argument("--unprioritised", action="store_true",
                        help="also the bad-model trials with the ingestor storing the open wave's telemetry in "
                             "arrival order, behind the rest of the fleet's (as before it stored them first)")
    parser.add_argument("--gapped-wake", action="store_true",
                        help="also the bad-model trials with the open wave's stored windows waking the controller "
                             "no sooner than anything stored does (0.2 s after its last woken tick), as before "
                             "they woke it at once")  # fmt: skip
    parser.add_argument("--traffic", choices=("phased", "synchronised", "both"), default="both",
                        help="devices' windows each on its own phase of the period, all at once, or both (the "
                             "bad-model trials side by side; the rest runs phased)")
    parser.add_argument("--bad-only", action="store_true",
                        help="only the bad-model trials (on v1): no all-at-once, staged or API figures")
    args = parser.parse_args()
    result: dict[str, Any] = {"devices": args.devices, "gate_period_s": args.tick, "broker": args.broker,
                              "telemetry_period_s": args.telemetry_period, "traffic": args.traffic,
                              "api_processes": args.api_processes, "alert_in_process": args.alert_in_process,
                              "fleet_nice": args.fleet_nice}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        broker_url = stack.enter_context(Mosquitto(Path(tmp))).url if args.broker == "mosquitto" else None
        settings = CloudSettings(data_dir=Path(tmp) / "cloud", api_port=0, mqtt_port=0, rollout_tick_s=args.tick,
                                 mqtt_url=broker_url, database_url=args.database_url,
                                 api_processes=args.api_processes,
                                 alert_process=not args.alert_in_process)  # fmt: skip
        with CloudService(settings) as cloud:
            freeze_startup_heap()  # as `edgefleet up` does (cloud.heap)
            assert cloud.engine is not None and cloud.store is not None and cloud.deployer is not None
            train = [TrainingConfig(model_id=MODEL_ID), TrainingConfig(model_id=MODEL_ID, params={"C": 0.5}),
                     TrainingConfig(model_id=MODEL_ID, params={"C": 0.25}),
                     TrainingConfig(model_id=MODEL_ID, estimator="random_forest",
                                    params={"n_estimators": 1, "max_depth": 1}, quantize="auto")]  # fmt: skip
            v1, v2, v3, bad = (run_training_pipeline(cloud.engine, cloud.store, cloud.signer, c) for c in train)
            ids = [f"bench-{i:04d}" for i in range(args.devices)]
            with Session(cloud.engine) as session:
                passwords = {d: enroll_device(session, d).password for d in ids}
                session.commit()
            found = ensure_dev_token(cloud.engine, settings.data_dir)
            assert found is not None
            token = found[0].read_text().strip()
            fleet_priority = FleetPriority(args.fleet_nice)
            fleet = AgentHost([DeviceSpec(d, password=passwords[d]) for d in ids], mqtt_url=cloud.mqtt_url or "",
                              trust_path=cloud.trust_chain_path, state_root=Path(tmp) / "devices",
                              mqtt_protocol="5" if args.broker == "mosquitto" else "3.1.1")  # fmt: skip
            with fleet:
                # every device answers 10 rows and sends a window each telemetry period
                def driver(phased: bool) -> Traffic:
                    return Traffic(fleet, v1.split.X_test, rounds=10**9, period_s=args.telemetry_period,
                                   rows_per_round=10, phased=phased).start()

                traffic = driver(args.traffic != "synchronised")
                try:
                    cloud.deployer.deploy(DeploymentCreate(model_id=MODEL_ID, version=v1.version, device_ids=ids))
                    assert wait_for(lambda: len(running(fleet, v1.version)) == len(ids), args.timeout) is not None
                    time.sleep(3 * max(1.0, args.tick))  # a baseline of v1 telemetry

                    api = httpx.Client(base_url=cloud.api_url or "", timeout=30,
                                       headers={"Authorization": f"Bearer {token}"})  # fmt: skip
                    policy: dict[str, Any] = {"strategy": "waves", "first_wave": 10, "growth": 2, "dwell_s": 0,
                              "gates": {"min_devices": 5, "min_inferences": 50, "max_p95_ratio": 100}}  # fmt: skip
                    good = v1.version
                    if not args.bad_only:
                        start = time.monotonic()
                        cloud.deployer.deploy(DeploymentCreate(model_id=MODEL_ID, version=v2.version, device_ids=ids))
                        done = wait_for(lambda: len(running(fleet, v2.version)) == len(ids), args.timeout)
                        result["all_at_once_s"] = None if done is None else round(time.monotonic() - start, 2)
                        time.sleep(3 * max(1.0, args.tick))

                        start = time.monotonic()
                        staged = api.post("/api/v1/rollouts", json={
                            "deployment": {"model_id": MODEL_ID, "version": v3.version, "device_ids": ids},
                            "rollout": policy}).json()  # fmt: skip
                        done = wait_for(lambda: len(running(fleet, v3.version)) == len(ids), args.timeout)
                        result["staged_rollout_s"] = None if done is None else round(time.monotonic() - start, 2)
                        result["staged_waves"] = staged["wave_sizes"]
                        time.sleep(3 * max(1.0, args.tick))
                        good = v3.version

                    canary = {**policy, "strategy": "canary", "canary": 10}
                    assert cloud.ingestor is not None and cloud.rollouts is not None
                    trials = []
                    # side by side, alternating: the gates with the early sequential breach, without it (the
                    # fixed minimum evidence), and optionally the controller judging on its tick only (the
                    # ingestor does not wake it) rather than as soon as telemetry is stored (as the service does)
                    # the traffic driver: each device on its own phase (as a fleet is), or all in one burst
                    phased = args.traffic != "synchronised"
                    candidates = [("", True, None, phased, True, True),
                                  ("_fixed_evidence", True, 0.0, phased, True, True)]  # fmt: skip
                    if args.traffic == "both":
                        candidates.append(("_synchronised", True, None, False, True, True))
                    if args.tick_only:
                        candidates.append(("_tick_only", False, None, phased, True, False))
                    if args.unprioritised:  # the ingestor storing the open wave's windows in arrival order
                        candidates.append(("_unprioritised", True, None, phased, False, True))
                        if args.traffic == "both":
                            candidates.append(("_synchronised_unprioritised", True, None, False, False, True))
                    if args.gapped_wake:  # the wave's windows waking the controller no sooner than any others
                        candidates.append(("_gapped_wake", True, None, phased, True, False))
                        if args.traffic == "both":
                            candidates.append(("_synchronised_gapped_wake", True, None, False, True, False))
                    for suffix, woken, alpha, in_phase, prioritised, urgent in candidates * args.bad_trials:
                        if traffic.phased != in_phase:
                            traffic.stop()
                            traffic = driver(in_phase)
                            time.sleep(2 * max(1.0, args.tick))
                        cloud.ingestor.on_stored = cloud.rollouts.wake if woken else None
                        cloud.ingestor.on_watched_stored = cloud.rollouts.wake_urgently if urgent else None
                        cloud.rollouts.on_watch = cloud.ingestor.watch if prioritised else None
                        cloud.ingestor.watch(set())
                        gates = {**policy["gates"], **({} if alpha is None else {"early_breach_alpha": alpha})}
                        trial = bad_model_trial(cloud, fleet, api, ids, bad.version, good, {**canary, "gates": gates},
                                                args)  # fmt: skip
                        trials.append({"candidate": suffix.lstrip("_") or "sequential", "woken": woken,
                                       "prioritised": prioritised, "urgent_wake": urgent,
                                       "traffic": "phased" if in_phase else "synchronised", **trial})
                        print(trials[-1], file=sys.stderr)
                        time.sleep(3 * max(1.0, args.tick))
                    cloud.ingestor.on_stored, cloud.rollouts.on_watch = cloud.rollouts.wake, cloud.ingestor.watch
                    cloud.ingestor.on_watched_stored = cloud.rollouts.wake_urgently
                    result["bad_model_trials"] = trials
                    if traffic.phased != (args.traffic != "synchronised"):
                        traffic.stop()
                        traffic = driver(args.traffic != "synchronised")
                    for suffix, *_ in candidates:
                        mine = [t for t in trials if t["candidate"] == (suffix.lstrip("_") or "sequential")]
                        periods = [t["recovered_in_gate_periods"] for t in mine]
                        median = None if None in periods else statistics.median(periods)
                        result[f"recovered_in_gate_periods{suffix}"] = None if median is None else round(median, 2)
                        decided = statistics.median(t["decided_s"] or 0 for t in mine)
                        result[f"bad_model_decided_s{suffix}"] = round(decided, 2)
                        result[f"recovered_in_gate_periods{suffix}_range"] = (
                            None if None in periods else [min(periods), max(periods)])
                        for part in ("rollback_s", "last_back_s"):
                            values = [t[part] for t in mine if t[part] is not None]
                            median_s = round(statistics.median(values), 2) if values else None
                            result[f"bad_model_{part}{suffix}"] = median_s
                        result[f"bad_model_stage_s{suffix}"] = {  # each stage's median share (s)
                            k: round(statistics.median(v), 2) for k in STAGES
                            if (v := [t["stage_s"][k] for t in mine if t["stage_s"][k] is not None])}  # fmt: skip
                        result[f"bad_model_dominant_stages{suffix}"] = dict(
                            Counter(t["dominant_stage"] for t in mine).most_common())  # fmt: skip
                        result[f"bad_model_trials_within_2_gate_periods{suffix}"] = sum(
                            p is not None and p <= 2 for p in periods)  # fmt: skip
                    result["bad_model_stopped_in_first_wave"] = all(t["stopped_in_first_wave"] for t in trials)
                    result["bad_model_reason"] = trials[-1]["reason"]
                    if args.bad_only:
                        return _finish(result)
                    fleet_priority.apply()  # for the API figures only: the rollout figures are the agents' too
                    result.update(api_figures(cloud.api_url or "", token))
                    api.close()
                finally:
                    traffic.stop()
                # side by side: the same clients with the agents idle (no requests, no telemetry), to tell the
                # API's own latency from this process sharing its cores with 200 reporting agents
                result.update(api_figures(cloud.api_url or "", token, prefix="api_idle_fleet"))
    return _finish(result)


def _finish(result: dict[str, Any]) -> int:
    if result.get("all_at_once_s") and result.get("staged_rollout_s"):
        result["staged_over_all_at_once"] = round(result["staged_rollout_s"] / result["all_at_once_s"], 2)
    result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
