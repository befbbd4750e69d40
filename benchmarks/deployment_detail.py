"""A 10,000-device deployment read by the API and the console, before and after the detail stopped listing
every target, side by side in one run (candidates alternate, --rounds times):

  before        GET /api/v1/deployments/{id} as it was (main's `_detail`, mounted here at /bench/before/{id}):
                every target in the body, counted in Python, the waiting reason from all of them
  after         GET /api/v1/deployments/{id}: counts by a grouped query, the first 100 targets, targets_next
  after-counts  the same with ?target_limit=0 (what `edgefleet deploy --wait` polls)
  fleet-tiles   the console's fleet tiles alone (cloud.console.views.fleet_tiles: one grouped query over
                every device and the quarter hour's telemetry), uncached; its "bytes" are the devices it counted
  console       GET /console (a page of 500 devices under the tiles), tiles from the read cache as served

The devices, deployment and telemetry (--windows per device in the last quarter hour) are written straight to
SQLite in a temporary directory (or --database-url, a fresh schema). In-process with FastAPI's TestClient,
one request at a time: latency here is the server's work, not concurrency.

    .venv/bin/python benchmarks/deployment_detail.py [--devices 10000] [--rounds 5] [--database-url ...]

Prints one JSON object last: {"rows": [...], "ratios": {...}, "loadavg": [...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi import FastAPI  # noqa: E402
from sqlmodel import Session, col, select  # noqa: E402

from cloud.api import AppServices, create_app  # noqa: E402
from cloud.db import create_tables, make_engine  # noqa: E402
from cloud.db.tables import (  # noqa: E402
    Deployment,
    DeploymentPublic,
    DeploymentTarget,
    DeploymentTargetPublic,
    Device,
    ModelVersion,
    TelemetryRecord,
)
from cloud.identity.tokens import create_token  # noqa: E402
from cloud.rollout import targets_of  # noqa: E402
from cloud.settings import CloudSettings  # noqa: E402
from cloud.types import now_ms  # noqa: E402

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient


class BeforeDetail(DeploymentPublic):
    targets: list[DeploymentTargetPublic]
    counts: dict[str, int]
    waiting: str | None = None


def before_waiting(session: Session, deployment: Deployment, targets: list[DeploymentTarget]) -> str | None:
    """main's waiting_reason for a plain in-progress deployment: from every target, devices read by id."""
    open_ids = [t.device_id for t in targets if t.status in ("pending", "in_progress")]
    devices = {d.id: d for d in session.exec(select(Device).where(col(Device.id).in_(open_ids)))}
    offline = [d for d in open_ids if d not in devices or not devices[d].online]
    online = [d for d in open_ids if d not in offline]

    def some(ids: list[str]) -> str:
        return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")

    parts = []
    if offline:
        parts.append(f"{len(offline)} offline ({some(offline)}): their desired state waits for them, retained")
    if online:
        parts.append(f"{len(online)} online still updating or silent ({some(online)})")
    return f"waiting for {len(open_ids)} device(s): " + "; ".join(parts)


def mount_before(app: FastAPI) -> None:
    engine = app.state.services.engine

    @app.get("/bench/before/{deployment_id}", response_model=BeforeDetail)
    def before(deployment_id: str) -> BeforeDetail:
        with Session(engine) as session:
            deployment = session.get(Deployment, deployment_id)
            assert deployment is not None
            targets = targets_of(session, deployment_id)
            return BeforeDetail(**DeploymentPublic.model_validate(deployment).model_dump(),
                                targets=[DeploymentTargetPublic.model_validate(t) for t in targets],
                                counts=dict(Counter(t.status for t in targets)),
                                waiting=before_waiting(session, deployment, targets))  # fmt: skip


def populate(engine: Any, devices: int, windows: int) -> str:
    now = now_ms()
    with Session(engine) as session:
        mv = ModelVersion(model_id="m", version="1.0.0", sequence=1, signed_manifest=b"")
        session.add(mv)
        session.flush()
        ids = [f"dev-{i:05d}" for i in range(devices)]
        session.add_all(Device(id=d, online=i % 3 != 0, update_state="active" if i % 7 else "downloading",
                               active_model_id="m", active_version="1.0.0", labels={"site": "bench"})
                        for i, d in enumerate(ids))  # fmt: skip
        session.flush()
        deployment = Deployment(id="bench-deployment", model_id="m", version="1.0.0", model_version_id=mv.id or 0,
                                labels={"site": "bench"}, chunk_size_bytes=65536)  # fmt: skip
        session.add(deployment)
        session.flush()
        session.add_all(DeploymentTarget(deployment_id=deployment.id, device_id=d, generation=1,
                                         status="succeeded" if i % 4 == 0 else "pending")
                        for i, d in enumerate(ids))  # fmt: skip
        session.add_all(TelemetryRecord(device_id=d, seq=w, window_start_ms=now - (w + 1) * 60_000,
                                        window_end_ms=now - w * 60_000, inference_count=100,
                                        error_count=int(i % 50 == 0))
                        for i, d in enumerate(ids) for w in range(windows))  # fmt: skip
        session.commit()
        _, token = create_token(session, name="bench", role="viewer")
        session.commit()
    return token


def timed(call: Any) -> tuple[float, int]:
    started = time.perf_counter()
    size = call()
    return (time.perf_counter() - started) * 1000, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--windows", type=int, default=3, help="telemetry windows per device, last 15 min")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    from cloud.console import views

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(args.database_url or f"sqlite:///{tmp}/bench.db")
        create_tables(engine)
        token = populate(engine, args.devices, args.windows)
        settings = CloudSettings(data_dir=Path(tmp), auth_lookup_burst=1000)
        app = create_app(settings, AppServices(engine=engine, deployer=None))  # type: ignore[arg-type]  # reads only
        mount_before(app)
        headers = {"Authorization": f"Bearer {token}"}
        with TestClient(app, headers=headers) as client:
            signin = client.post("/console/signin", data={"token": token, "next": "/console"},
                                 headers={"Origin": "http://testserver"}, follow_redirects=False)  # fmt: skip
            assert signin.status_code == 303, signin.text

            def get(path: str) -> int:
                answer = client.get(path, headers={"Accept-Encoding": "identity"})
                assert answer.status_code == 200, answer.text[:300]
                return len(answer.content)

            def tiles() -> int:
                with Session(engine) as session:
                    return views.fleet_tiles(session)["total"]  # type: ignore[no-any-return]

            candidates = {
                "before": lambda: get("/bench/before/bench-deployment"),
                "after": lambda: get("/api/v1/deployments/bench-deployment"),
                "after-counts": lambda: get("/api/v1/deployments/bench-deployment?target_limit=0"),
                "fleet-tiles": tiles,
                "console": lambda: get("/console"),
            }
            for call in candidates.values():  # warm up: first queries, templates, caches
                call()
            samples: dict[str, list[tuple[float, int]]] = {name: [] for name in candidates}
            for _ in range(args.rounds):
                for name, call in candidates.items():
                    samples[name].append(timed(call))
    rows = [{"candidate": name, "median_ms": round(statistics.median(ms for ms, _ in found), 1),
             "max_ms": round(max(ms for ms, _ in found), 1), "bytes": found[-1][1]}
            for name, found in samples.items()]  # fmt: skip
    by = {r["candidate"]: r for r in rows}
    ratios = {
        "after_vs_before_ms": round(by["after"]["median_ms"] / by["before"]["median_ms"], 3),
        "after_vs_before_bytes": round(by["after"]["bytes"] / by["before"]["bytes"], 4),
        "counts_vs_before_ms": round(by["after-counts"]["median_ms"] / by["before"]["median_ms"], 3),
    }
    for row in rows:
        print(f"{row['candidate']:<13} median {row['median_ms']:>8} ms  max {row['max_ms']:>8} ms  {row['bytes']:>9} B")
    print(json.dumps({"devices": args.devices, "rows": rows, "ratios": ratios, "loadavg": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
