"""A real Prometheus (Debian's `prometheus` package) scrapes GET /metrics of a real CloudService on loopback,
with the viewer token the endpoint asks for, every second; its own query API then answers with the fleet's
figures. This is what an operator's Prometheus sees: the exposition format, the content type and the bearer
auth as Prometheus (not a Python parser) reads them. Skipped, saying so, where the binary is missing."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.api_tokens import operator_token
from support.enrollment import enroll
from support.net import free_port

from cloud.identity.tokens import Role
from cloud.service import CloudService
from cloud.settings import CloudSettings

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_S = 1


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudService]:
    settings = CloudSettings(data_dir=tmp_path / "cloud", api_port=0, metrics_require_token=True)
    with CloudService(settings) as service:
        yield service


def viewer_token(service: CloudService) -> str:
    return operator_token(service, Role.VIEWER, "prometheus")


@pytest.fixture
def prometheus(tmp_path: Path, cloud: CloudService) -> Iterator[str]:
    if not Path(PROMETHEUS).is_file():
        pytest.skip("no prometheus binary: apt-get install prometheus (.ci/run does)")
    target = httpx.URL(cloud.api_url)
    (tmp_path / "token").write_text(viewer_token(cloud))
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global: {{scrape_interval: {SCRAPE_S}s, scrape_timeout: {SCRAPE_S}s, evaluation_interval: {SCRAPE_S}s}}
scrape_configs:
  - job_name: edgefleet
    metrics_path: /metrics
    authorization: {{type: Bearer, credentials_file: {tmp_path / "token"}}}
    static_configs: [{{targets: ["{target.host}:{target.port}"]}}]
""")
    with running_prometheus(tmp_path, config) as url:
        yield url


@contextlib.contextmanager
def running_prometheus(tmp_path: Path, config: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / f"{config.stem}.log").open("wb")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / config.stem}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def until(what: str, probe: Any, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = probe()
        except (httpx.HTTPError, ValueError):  # not listening yet, or not ready (a plain-text 503)
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} within {timeout_s}s"
        time.sleep(0.25)


def query(prometheus: str, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert answer["status"] == "success", answer
    own = ("__name__", "job", "instance")  # Prometheus's labels, not ours
    return {
        tuple(sorted((k, v) for k, v in r["metric"].items() if k not in own)): float(r["value"][1])
        for r in answer["data"]["result"]
    }


def test_a_real_prometheus_scrapes_the_fleet_with_a_viewer_token(cloud: CloudService, prometheus: str) -> None:
    enroll(cloud, "pi-01", "pi-02", "pi-03")

    def target() -> dict[str, Any] | None:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return targets[0] if targets and targets[0]["health"] == "up" else None

    up = until("healthy scrape target", target)
    assert up["labels"]["job"] == "edgefleet" and up["lastError"] == ""
    assert query(prometheus, "up") == {(): 1.0}
    # a later scrape sees the three devices, and Prometheus read every family: gauges with labels too
    assert until("3 devices in Prometheus", lambda: query(prometheus, "edgefleet_devices") == {(): 3.0})
    states = query(prometheus, "edgefleet_rollouts")
    assert {dict(labels)["state"] for labels in states} >= {"running", "paused", "completed", "rolled_back"}
    assert query(prometheus, "edgefleet_devices_online") == {(): 0.0}
    # the ingestion counters are counters to Prometheus: rate() over them is defined
    assert until(
        "a rate over the ingestion counter",
        lambda: query(prometheus, "rate(edgefleet_ingest_messages_received_total[5s])") == {(): 0.0},
    )


def test_prometheus_marks_the_target_down_without_the_token(tmp_path: Path, cloud: CloudService) -> None:
    """The negative half: the same scrape with no token is refused (401), and Prometheus says so."""
    if not Path(PROMETHEUS).is_file():
        pytest.skip("no prometheus binary: apt-get install prometheus (.ci/run does)")
    target = httpx.URL(cloud.api_url)
    config = tmp_path / "anonymous.yml"
    config.write_text(f"""
global: {{scrape_interval: {SCRAPE_S}s, scrape_timeout: {SCRAPE_S}s}}
scrape_configs:
  - job_name: edgefleet
    static_configs: [{{targets: ["{target.host}:{target.port}"]}}]
""")
    with running_prometheus(tmp_path, config) as prometheus:

        def refused() -> dict[str, Any] | None:
            targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            return targets[0] if targets and targets[0]["health"] == "down" else None

        down = until("target marked down", refused)
        assert "401" in down["lastError"], down
