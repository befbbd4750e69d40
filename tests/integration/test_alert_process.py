"""The alert evaluation in a process of its own (`alert_process`, what `edgefleet up` runs): alerts are raised
from it as from the core's thread, the core's interpreter never runs it, and a killed one is started again
while the alert it raised holds (a failed tick clears nothing)."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session
from support import wait_until
from support.drift_windows import ingest_drift_windows
from support.enrollment import enroll

from cloud.monitoring import alerts
from cloud.monitoring.alert_process import AlertProcess
from cloud.service import CloudService
from cloud.settings import CloudSettings
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration

ARTIFACT = b"model bytes" * 100
DEVICES = ["d0", "d1", "d2", "odd"]


@pytest.fixture
def cloud(tmp_path: Path, database_url: str) -> Iterator[CloudService]:
    settings = CloudSettings(data_dir=tmp_path / "cloud", database_url=database_url, api_port=0,
                             alert_interval_s=0.2, alert_process=True)  # fmt: skip
    with CloudService(settings) as service:
        yield service


def _register_m(cloud: CloudService) -> str:
    manifest = pb.Manifest(model_id="m", metrics={"accuracy": 0.95})
    manifest.artifacts.add(name="model.onnx", format=pb.ARTIFACT_FORMAT_ONNX, runtime="onnxruntime",
                           sha256=hashlib.sha256(ARTIFACT).hexdigest(), size_bytes=len(ARTIFACT))  # fmt: skip
    for index in range(2):
        manifest.reference.features.add(index=index, bin_edges=[0, 1, 2, 3, 4], counts=[25] * 4)
    manifest.reference.predictions.labels.extend(["a", "b"])
    manifest.reference.predictions.counts.extend([50, 50])
    return cloud.register_model_version(manifest, {"model.onnx": ARTIFACT}).version


def _active(cloud: CloudService) -> list[str]:
    with Session(cloud.engine) as session:  # type: ignore[arg-type]
        return [a["key"] for a in alerts.listing(session, include_cleared=False)]


def test_alerts_are_evaluated_in_a_process_of_their_own_and_a_killed_one_is_started_again(
    cloud: CloudService,
) -> None:
    monitor = cloud.alerts
    assert monitor is not None and isinstance(monitor.evaluator, AlertProcess)
    assert _register_m(cloud) == "1"
    enroll(cloud, *DEVICES)
    ingest_drift_windows(cloud.engine, DEVICES, {"odd"}, int(time.time() * 1000) - 120_000)  # type: ignore[arg-type]

    assert wait_until(lambda: _active(cloud) == ["drift:m@1"], timeout_s=60), "no drift alert within 60 s"
    first = monitor.evaluator.process
    assert first is not None and first.pid != os.getpid()

    os.kill(first.pid, signal.SIGKILL)  # killed mid-run (out of memory, a crash in a library)
    assert wait_until(lambda: monitor.evaluator.restarts == 1, timeout_s=30), "the alert process was not started again"
    evaluations = monitor.stats.snapshot()["evaluations"]
    assert wait_until(lambda: monitor.stats.snapshot()["evaluations"] >= evaluations + 2, timeout_s=60)
    second = monitor.evaluator.process
    assert second is not None and second.pid not in (first.pid, os.getpid()) and second.is_alive()
    assert _active(cloud) == ["drift:m@1"]  # the killed tick failed, it cleared nothing
    counts = monitor.counters()
    assert counts["raised"] == 1 and counts["cleared"] == 0 and counts["process_restarts"] == 1

    text = httpx.get(f"{cloud.api_url}/metrics", timeout=10).text
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip
    assert values[("edgefleet_alerts_active", (("kind", "drift"),))] == 1
    assert values[("edgefleet_alert_transitions_total", (("event", "raised"),))] == 1
    assert values[("edgefleet_alert_process_restarts_total", ())] == 1


def test_closing_the_monitor_ends_its_process(cloud: CloudService) -> None:
    monitor = cloud.alerts
    assert monitor is not None and isinstance(monitor.evaluator, AlertProcess)
    assert wait_until(lambda: monitor.stats.snapshot()["evaluations"] >= 1, timeout_s=60)
    process = monitor.evaluator.process
    assert process is not None and process.is_alive()
    monitor.stop()
    assert not process.is_alive()
    cloud.alerts = None  # stopped already
