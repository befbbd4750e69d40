"""What an idle hosted agent costs per tick (issue 10): N agents on one `simulator.host.AgentHost` loop,
connected to a mosquitto of their own, nothing deployed.

    .venv/bin/python benchmarks/agent_tick.py [--devices 300] [--seconds 35]

step_us: one agent step on a tick (`Agent._step(None)` through its corked `LoopRunner`, the tick made due),
run on the loop for every agent in turn, median of 5 rounds, in the loop thread's CPU time (a loaded
machine's preemptions left out). idle_cpu_us_per_agent_s: the process's CPU over `--seconds` with the
agents idling as in the simulator (their ticks, the loop, keepalives: at the host's default 60 s a ping timer
every 30 s; the default window holds one of those and `edge_agent.runner.LONGEST_TICK_S`), per agent and
second: what `fleet.py`'s workers_idle_cpu_per_s is made of. poll_us: one `host.count` of the agents
running a version (a `ProcessFleet` worker's answer to `fleet.py`'s poll, twice a second), per agent, in the
polling thread's CPU time. To compare with another checkout, copy this script there and run it alternately.
Prints one JSON object last, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support.mosquitto import MosquittoBroker  # noqa: E402
from support.releases import make_keys  # noqa: E402

from protocols.v1 import messages_pb2 as pb  # noqa: E402
from simulator.host import AgentHost, DeviceSpec  # noqa: E402


def step_us(host: AgentHost, rounds: int) -> float:
    agents = [device.agent for device in host.devices.values()]

    def run() -> float:
        start = time.thread_time()  # the loop thread's CPU: a loaded machine's preemptions left out
        for _ in range(rounds):
            for agent in agents:
                agent._next_tick_s = 0.0  # due, as on the runner's timer
                agent._runner._run(None)  # type: ignore[attr-defined]
        return (time.thread_time() - start) / (rounds * len(agents)) * 1e6

    host.loop.call(run)  # warm
    return statistics.median(host.loop.call(run) for _ in range(5))


def poll_us(host: AgentHost, rounds: int = 20) -> float:
    def runs(state: pb.ReportedState) -> bool:  # simulator.process_fleet's "running" query
        return state.update_state == pb.UPDATE_STATE_ACTIVE and state.active_model.version == "1"

    def once() -> float:
        start = time.thread_time()
        for _ in range(rounds):
            host.count(runs)
        return (time.thread_time() - start) / (rounds * len(host.devices)) * 1e6

    once()
    return statistics.median(once() for _ in range(5))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=35.0, help="the idle CPU window")
    parser.add_argument("--rounds", type=int, default=100, help="ticks per agent in each step_us round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agent-tick-") as tmp_dir:
        tmp = Path(tmp_dir)
        keys = make_keys(tmp / "keys")
        with MosquittoBroker(tmp / "broker") as broker:
            specs = [DeviceSpec(f"tick-{n:05d}") for n in range(args.devices)]
            host = AgentHost(specs, mqtt_url=broker.url, trust_path=keys.trust_path, state_root=tmp / "devices")
            host.start()
            try:
                if not all(t.wait_connected(60) for t in host.transports.values()):
                    raise SystemExit("not every agent connected within 60 s")
                time.sleep(3)  # the start's reports and subscriptions settle
                cpu, wall = time.process_time(), time.monotonic()
                time.sleep(args.seconds)
                idle = (time.process_time() - cpu) / (time.monotonic() - wall) / args.devices * 1e6
                step = step_us(host, args.rounds)
                poll = poll_us(host)
            finally:
                host.stop()
    print(json.dumps({"devices": args.devices, "step_us": round(step, 2), "idle_cpu_us_per_agent_s": round(idle, 2),
                      "poll_us": round(poll, 2), "loadavg_1m": os.getloadavg()[0]}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
