"""Console API under big lists and unauthenticated floods, old code against new, side by side in one run.

    .venv/bin/python benchmarks/console_flood.py [--sizes 200,1000] [--seconds 5] [--old-ref main]

Each candidate is a real `CloudService` (uvicorn, embedded SQLite and broker, `api_processes` as given)
from its own source tree: "old" from `git archive <old-ref>` unpacked in a temporary directory, "new"
from this checkout. Both are up at once and measured in turn, so a change in the machine's load hits them
alike. Per fleet size:
  - bytes: GET /api/v1/devices as sent on the wire, with and without `Accept-Encoding: gzip`
  - devices p99: wrk, 30 kept-alive clients asking for gzip, on GET /api/v1/devices
  - operator p99: one kept-alive operator on an uncached GET (/api/v1/tokens, admin, a database read each
    time), alone and while wrk floods /healthz with 100 kept-alive clients and no token
Prints one JSON object last: {"results": [...], "ratios": {...}, "load": "..."}; the ratios are old/new
(bytes, p99) and flooded/quiet (the operator's p99 slowdown under the flood, per candidate).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import candidate_server  # noqa: E402  (benchmarks/candidate_server.py)
import wrk  # noqa: E402  (benchmarks/wrk.py)

REPO = HERE.parent
OPERATOR_PATH = "/api/v1/tokens"
FLOOD_CLIENTS = 100

# run in the candidate's own interpreter, on its own tree: a CloudService with `devices` devices
SERVER = r"""
import json, sys
from pathlib import Path
from sqlmodel import Session
from cloud.db.tables import Device
from cloud.identity.tokens import Role, create_token
from cloud.service import CloudService
from cloud.settings import CloudSettings

devices, data_dir, processes = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
with CloudService(CloudSettings(data_dir=data_dir, api_port=0, api_processes=processes)) as cloud:
    with Session(cloud.engine) as session:
        for i in range(devices):
            session.add(Device(id=f"pi-{i:05d}", labels={"site": f"site-{i % 7}", "rack": str(i % 40)},
                               online=i % 3 != 0, active_model_id="iris", active_version="1.0.3",
                               update_state="active", agent_version="0.9.0"))
        _, token = create_token(session, name="bench", role=Role.ADMIN, created_by="bench")
        session.commit()
    print(json.dumps({"url": cloud.api_url, "token": token}), flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
"""


def old_tree(ref: str) -> Path:
    target = Path(tempfile.mkdtemp(prefix="edgefleet-old-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def start(tree: Path, devices: int, processes: int) -> tuple[subprocess.Popen[str], str, str]:
    data_dir = tempfile.mkdtemp(prefix="edgefleet-flood-")
    return candidate_server.start(tree, SERVER, str(devices), data_dir, str(processes))


def wire_bytes(url: str, token: str, encoding: str) -> int:
    request = urllib.request.Request(f"{url}/api/v1/devices?limit=2000", headers={
        "Authorization": f"Bearer {token}", "Accept-Encoding": encoding})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
        if response.headers.get("content-encoding") == "gzip":
            assert json.loads(gzip.decompress(body))  # the same JSON, compressed
        return len(body)


def flooded(url: str, token: str, seconds: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the operator's row, the flood's row): wrk on /healthz with no token beside one operator."""
    flood: dict[str, Any] = {}

    def run_flood() -> None:
        flood.update(wrk.run(url, "/healthz", "", FLOOD_CLIENTS, seconds + 2, keepalive=True) or {})

    thread = threading.Thread(target=run_flood)
    thread.start()
    time.sleep(1.0)  # the flood is on before the operator starts
    operator = wrk.run(url, OPERATOR_PATH, token, 1, seconds, keepalive=True) or {}
    thread.join(seconds + 90)
    return operator, flood


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,1000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--old-ref", default="main")
    parser.add_argument("--api-processes", type=int, default=0)
    args = parser.parse_args()
    if not wrk.available():
        raise SystemExit("wrk is not installed")
    trees = {"old": old_tree(args.old_ref), "new": REPO}
    results: list[dict[str, Any]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        servers = {name: start(tree, size, args.api_processes) for name, tree in trees.items()}
        try:
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
            for round_ in range(args.rounds):
                order = list(trees) if round_ % 2 == 0 else list(reversed(trees))  # neither always goes first
                for name in order:
                    _, url, token = servers[name]
                    row: dict[str, Any] = {"bytes_gzip": wire_bytes(url, token, "gzip"),
                                           "bytes_plain": wire_bytes(url, token, "identity")}  # fmt: skip
                    devices = wrk.run(url, "/api/v1/devices?limit=2000", token, 30, args.seconds, keepalive=True,
                                      headers=("Accept-Encoding: gzip",)) or {}  # fmt: skip
                    quiet = wrk.run(url, OPERATOR_PATH, token, 1, args.seconds, keepalive=True) or {}
                    operator, flood = flooded(url, token, args.seconds)
                    row.update(devices_p99_ms=devices.get("p99_ms"), devices_rps=devices.get("rps"),
                               operator_quiet_p99_ms=quiet.get("p99_ms"), operator_quiet_p50_ms=quiet.get("p50_ms"),
                               operator_flooded_p99_ms=operator.get("p99_ms"),
                               operator_flooded_p50_ms=operator.get("p50_ms"),
                               operator_flooded_failed=operator.get("failed"), flood_rps=flood.get("rps"),
                               flood_non_2xx=flood.get("failed"), flood_requests=flood.get("requests"),
                               sched_delay_p99_ms=operator.get("sched_delay_p99_ms"))  # fmt: skip
                    rounds[name].append(row)
                    print(json.dumps({"candidate": name, "devices": size, "round": round_, **row}), flush=True)
            for name, rows in rounds.items():
                median = {k: statistics.median(r[k] for r in rows if r[k] is not None)
                          for k in rows[0] if any(r[k] is not None for r in rows)}  # fmt: skip
                results.append({"candidate": name, "devices": size, "rounds": len(rows), **median,
                                "operator_flooded_p99_each": [r["operator_flooded_p99_ms"] for r in rows]})
        finally:
            for server, _, _ in servers.values():
                assert server.stdin is not None
                server.stdin.close()
                server.wait(60)
    print(json.dumps({"results": results, "ratios": ratios(results), "load": os.getloadavg()}))


def ratios(results: list[dict[str, Any]]) -> dict[str, float | None]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    out: dict[str, float | None] = {}
    by = {(r["candidate"], r["devices"]): r for r in results}
    for size in sorted({r["devices"] for r in results}):
        old, new = by.get(("old", size)), by.get(("new", size))
        if old is None or new is None:
            continue
        out[f"{size} bytes old/new (gzip asked)"] = ratio(old["bytes_gzip"], new["bytes_gzip"])
        out[f"{size} devices p99 old/new"] = ratio(old.get("devices_p99_ms"), new.get("devices_p99_ms"))
        out[f"{size} operator p99 flooded/quiet old"] = ratio(old.get("operator_flooded_p99_ms"),
                                                              old.get("operator_quiet_p99_ms"))
        out[f"{size} operator p99 flooded/quiet new"] = ratio(new.get("operator_flooded_p99_ms"),
                                                              new.get("operator_quiet_p99_ms"))
        out[f"{size} operator flooded p99 old/new"] = ratio(old.get("operator_flooded_p99_ms"),
                                                            new.get("operator_flooded_p99_ms"))
        out[f"{size} operator flooded p50 old/new"] = ratio(old.get("operator_flooded_p50_ms"),
                                                            new.get("operator_flooded_p50_ms"))
    return out


if __name__ == "__main__":
    main()
