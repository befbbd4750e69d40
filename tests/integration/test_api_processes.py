"""The console API in a process of its own (`api_processes`, what `edgefleet up` runs): it answers on the
cloud's port with the core's figures on /healthz, its deployments reach the devices through its own MQTT
connection to the core's embedded broker (the broker's cloud user), a revocation through it disconnects the
device at once (the core's broker is told over the link), and it ends with the cloud."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import wait_until
from support.enrollment import enroll

from cloud.cli.operator_token import ensure_dev_token
from cloud.service import CloudService
from cloud.settings import CloudSettings
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration

ARTIFACT = b"model" * 1000


@pytest.fixture
def cloud(tmp_path: Path, database_url: str) -> Iterator[CloudService]:
    settings = CloudSettings(data_dir=tmp_path / "cloud", database_url=database_url, api_port=0, api_processes=1)
    with CloudService(settings) as service:
        yield service


def test_the_api_process_serves_deploys_and_revokes_for_the_core(
    cloud: CloudService, make_transport: Callable[..., Any]
) -> None:
    assert cloud.api_processes is not None and cloud._server is None  # no API thread in the core
    [process] = cloud.api_processes.processes
    assert process.is_alive() and process.pid != os.getpid()
    found = ensure_dev_token(cloud.engine, cloud.settings.data_dir)  # type: ignore[arg-type]
    assert found is not None
    headers = {"Authorization": f"Bearer {found[0].read_text().strip()}"}

    def api(method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{cloud.api_url}{path}", headers=headers, timeout=10, **kwargs)

    health = api("GET", "/healthz").json()
    assert health["status"] == "ok", health
    assert health["components"]["api_mqtt"]["connected"] is True  # its own connection, as the broker's cloud user
    assert health["components"]["mqtt"]["connected"] is True  # the core's, asked over the link
    assert "received" in health["components"]["ingest"]  # the core's ingestion counters

    manifest = pb.Manifest(model_id="digits")
    manifest.artifacts.add(name="model.onnx", format=pb.ARTIFACT_FORMAT_ONNX, runtime="onnxruntime",
                           sha256=hashlib.sha256(ARTIFACT).hexdigest(), size_bytes=len(ARTIFACT))  # fmt: skip
    cloud.register_model_version(manifest, {"model.onnx": ARTIFACT})
    password = enroll(cloud, "pi-01")["pi-01"]
    desired = device_topic("pi-01", Channel.DESIRED, fleet=cloud.fleet)
    device, inbox = make_transport(desired, broker=cloud.broker, client_id="pi-01", username="pi-01",
                                   password=password)  # fmt: skip
    hello = pb.ReportedState(schema_version=1, device_id="pi-01", seq=1, ts_ms=int(time.time() * 1000))
    device.publish(device_topic("pi-01", Channel.REPORTED, fleet=cloud.fleet), hello.SerializeToString(), retain=True)
    assert wait_until(lambda: api("GET", "/api/v1/devices/pi-01").status_code == 200, 10)  # the core ingested it

    created = api("POST", "/api/v1/deployments", json={"model_id": "digits", "device_ids": ["pi-01"]})
    assert created.status_code == 201, created.text
    assert wait_until(lambda: inbox.payloads(desired), 10)  # published by the API process
    assert pb.DesiredState.FromString(inbox.payloads(desired)[-1]).deployment_id == created.json()["id"]

    revoked = api("POST", "/api/v1/devices/pi-01/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert wait_until(lambda: not device.connected, 5)  # the core's broker was told: its recheck is 30 s away

    cloud.stop()
    assert not process.is_alive()


def test_an_api_process_that_dies_is_started_again_on_the_same_port(cloud: CloudService) -> None:
    """Killed (out of memory, a crash in a library), the console API comes back while the core runs on:
    without the supervisor `edgefleet up` ran on with nothing answering on its port."""
    assert cloud.api_processes is not None
    [first] = cloud.api_processes.processes
    assert httpx.get(f"{cloud.api_url}/healthz", timeout=10).status_code == 200
    os.kill(first.pid, 9)  # type: ignore[arg-type]
    first.join(10)

    def answers_again() -> bool:
        try:
            return httpx.get(f"{cloud.api_url}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_until(answers_again, 120)
    [second] = cloud.api_processes.processes
    assert second.pid != first.pid and second.is_alive() and cloud.api_processes.restarts == 1
    cloud.stop()
    assert not second.is_alive()


def test_concurrent_health_checks_share_the_cores_answers(cloud: CloudService) -> None:
    """100 clients on /healthz asked the core five questions each, one at a time on the one pipe (p50 1.9 s
    while a fleet reported); now one question answers every probe and is shared for PROBE_CACHE_S."""
    from concurrent.futures import ThreadPoolExecutor

    from cloud.api.processes import PROBE_CACHE_S

    assert cloud.api_processes is not None
    requests = 40
    with httpx.Client(timeout=30) as client:
        assert client.get(f"{cloud.api_url}/healthz").json()["components"]["ingest"] is not None
        before, started = cloud.api_processes.answered, time.monotonic()
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(lambda _: client.get(f"{cloud.api_url}/healthz"), range(requests)))
        elapsed, asked = time.monotonic() - started, cloud.api_processes.answered - before
    assert all(a.status_code == 200 and "received" in a.json()["components"]["ingest"] for a in answers)
    assert asked <= 1 + elapsed / PROBE_CACHE_S, (asked, elapsed)  # the old code: 5 per request, 200
    assert asked < requests
