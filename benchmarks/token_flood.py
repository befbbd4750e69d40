"""An operator's first request after an API restart while its address floods made-up bearer tokens, old
code against new, side by side in one run.

    .venv/bin/python benchmarks/token_flood.py [--rounds 3] [--flooders 16] [--seconds 20] [--old-ref main]

Per round each candidate is a fresh real `CloudService` (uvicorn, embedded SQLite and broker, default
budget: 20 lookups at once and 2 a second per address) from its own source tree ("old": `git archive
<old-ref>` unpacked in a temporary directory; "new": this checkout), so the operator's token is one the
process has never admitted, as after a restart. A flood process (`--flooders` threads, kept-alive, from
127.0.0.1 like the operator) sends a made-up token of the old shape (`ef_<12 hex>_<secret>`, a new one each
request: the budgeted kind on both candidates) to GET /api/v1/devices; once it has had its first 429 the
operator, from the same address, asks GET /api/v1/tokens every 100 ms until the first 200 (or
`--seconds`), then 20 more. Candidates alternate which goes first. Prints one JSON object last: per
candidate the seconds and tries to the operator's first 200 (None: not served within --seconds), its 429s,
and the flood's rate and codes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import candidate_server  # noqa: E402  (benchmarks/candidate_server.py)

SERVER = r"""
import json, sys
from pathlib import Path
from sqlmodel import Session
from cloud.identity.tokens import Role, create_token
from cloud.service import CloudService
from cloud.settings import CloudSettings

with CloudService(CloudSettings(data_dir=Path(sys.argv[1]), api_port=0)) as cloud:
    with Session(cloud.engine) as session:
        _, token = create_token(session, name="bench", role=Role.ADMIN, created_by="bench")
        session.commit()
    print(json.dumps({"url": cloud.api_url, "token": token}), flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
"""

# a process of its own, so the flood does not share the measuring interpreter's lock
FLOOD = r"""
import collections, json, secrets, sys, threading, time
import httpx

url, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
codes = collections.Counter()
lock = threading.Lock()
stop = time.monotonic() + seconds

def run():
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.monotonic() < stop:
            token = f"ef_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
            try:
                code = http.get("/api/v1/devices", headers={"Authorization": f"Bearer {token}"}).status_code
            except httpx.HTTPError:
                code = "error"
            with lock:
                codes[code] += 1
                if code == 429 and codes[429] == 1:
                    print("spent", flush=True)  # the address's budget is gone: the operator may start

workers = [threading.Thread(target=run) for _ in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
print(json.dumps({"requests": sum(codes.values()), "rps": round(sum(codes.values()) / seconds, 1),
                  "codes": {str(k): v for k, v in codes.items()}}), flush=True)
"""


def old_tree(ref: str) -> Path:
    target = Path(tempfile.mkdtemp(prefix="edgefleet-old-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def start(tree: Path) -> tuple[subprocess.Popen[str], str, str]:
    return candidate_server.start(tree, SERVER, tempfile.mkdtemp(prefix="edgefleet-tokens-"))


def stop(server: subprocess.Popen[str]) -> None:
    assert server.stdin is not None
    server.stdin.close()
    server.wait(60)


def measure(url: str, token: str, flooders: int, seconds: float) -> dict[str, Any]:
    flood = subprocess.Popen([sys.executable, "-c", FLOOD, url, str(flooders), str(seconds + 3)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert flood.stdout is not None
    if flood.stdout.readline().strip() != "spent":  # the operator's first try meets a spent budget
        raise RuntimeError("the flood never spent the address's budget")
    time.sleep(0.5)
    headers = {"Authorization": f"Bearer {token}"}
    tries, refused, first_ok_s, after = 0, 0, None, []
    with httpx.Client(base_url=url, timeout=30) as http:
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            tries += 1
            code = http.get("/api/v1/tokens", headers=headers).status_code
            if code == 200:
                first_ok_s = round(time.monotonic() - began, 3)
                break
            refused += code == 429
            time.sleep(0.1)
        if first_ok_s is not None:
            for _ in range(20):
                sent = time.monotonic()
                ok = http.get("/api/v1/tokens", headers=headers).status_code == 200
                after.append((time.monotonic() - sent) * 1000 if ok else None)
    out, _ = flood.communicate(timeout=seconds + 120)
    served = [ms for ms in after if ms is not None]
    p50 = round(statistics.median(served), 1) if served else None
    return {"first_200_s": first_ok_s, "tries": tries, "operator_429": refused,
            "then_served": f"{len(served)}/{len(after)}", "then_p50_ms": p50,
            "flood": json.loads(out.strip().splitlines()[-1])}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flooders", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--old-ref", default="main")
    args = parser.parse_args()
    trees = {"old": old_tree(args.old_ref), "new": REPO}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        for name in order:
            server, url, token = start(trees[name])  # fresh: the operator's token was never admitted here
            try:
                row = {"candidate": name, "round": round_, "load": os.getloadavg()[0],
                       **measure(url, token, args.flooders, args.seconds)}  # fmt: skip
            finally:
                stop(server)
            rows[name].append(row)
            print(json.dumps(row), flush=True)
    summary = {name: {"first_200_s_each": [r["first_200_s"] for r in got],
                      "served_within_s": f"{sum(r['first_200_s'] is not None for r in got)}/{len(got)}",
                      "operator_429_each": [r["operator_429"] for r in got],
                      "flood_rps_median": statistics.median(r["flood"]["rps"] for r in got)}
               for name, got in rows.items()}  # fmt: skip
    print(json.dumps({"results": summary, "seconds": args.seconds, "flooders": args.flooders,
                      "load": os.getloadavg()}))  # fmt: skip


if __name__ == "__main__":
    main()
