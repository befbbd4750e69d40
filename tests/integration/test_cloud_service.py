"""The cloud stack end to end over a real MQTT broker, a real database and the HTTP API: a device
registers, gets a deployment as retained desired state (checked as a device checks it, against the trust
chain it pinned), fetches the artifact in chunks, verifies it, reports success and sends telemetry
(twice: stored once). Two clouds on one broker keep to their own fleets."""

from __future__ import annotations

import hashlib
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
from protocols.assignment import verify_desired
from protocols.roots import RootOfTrust
from protocols.topics import Channel, device_subscriptions, device_topic, trust_topic
from protocols.trust import verify_artifact
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration

ARTIFACT = bytes(range(256)) * 700  # 179200 bytes: three 64 KiB chunks


def manifest_for(data: bytes) -> pb.Manifest:
    manifest = pb.Manifest(model_id="digits")
    manifest.artifacts.add(
        name="model.onnx", format=pb.ARTIFACT_FORMAT_ONNX, runtime="onnxruntime",
        sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
    )  # fmt: skip
    manifest.reference.features.add(index=0, name="f0", bin_edges=[0, 1, 2], counts=[50, 50])
    return manifest


@pytest.fixture(params=["given-broker", "embedded-broker"])
def service(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Iterator[CloudService]:
    mqtt_url = request.getfixturevalue("mqtt_broker").url if request.param == "given-broker" else "embedded"
    settings = CloudSettings(data_dir=tmp_path / "cloud", database_url=database_url, mqtt_url=mqtt_url, api_port=0)
    with CloudService(settings) as running:
        yield running


def operator_headers(service: CloudService) -> dict[str, str]:
    """An admin token, made the way `edgefleet up` makes it in development."""
    assert service.engine is not None
    found = ensure_dev_token(service.engine, service.settings.data_dir)
    assert found is not None
    return {"Authorization": f"Bearer {found[0].read_text().strip()}"}


def api(service: CloudService, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{service.api_url}{path}", timeout=10, headers=operator_headers(service),
                             **kwargs)
    assert response.status_code < 400, response.text
    return response.json()


def test_device_gets_fetches_verifies_and_reports_a_deployment(
    service: CloudService, make_transport: Callable[..., Any]
) -> None:
    assert service.transport.wait_connected(10)
    mv = service.register_model_version(manifest_for(ARTIFACT), {"model.onnx": ARTIFACT})
    assert api(service, "GET", "/healthz")["status"] == "ok"

    device_id, fleet = "pi-001", service.fleet
    password = enroll(service, device_id)[device_id]  # the cloud ignores devices it has not enrolled
    # what provisioning pins: the first root version of the chain file `edgefleet up` names
    pinned = RootOfTrust.pin(pb.TrustChain.FromString(service.trust_chain_path.read_bytes()).roots[0], fleet=fleet)
    device, inbox = make_transport(
        *[f for f, _ in device_subscriptions(device_id, fleet=fleet)],
        broker=type("B", (), {"url": service.mqtt_url})(),
        protocol=service.mqtt_protocol, client_id=device_id, username=device_id, password=password,
    )  # fmt: skip
    hello = pb.ReportedState(
        schema_version=1, device_id=device_id, seq=1, ts_ms=int(time.time() * 1000), labels={"site": "lab"}
    )
    device.publish(device_topic(device_id, Channel.REPORTED, fleet=fleet), hello.SerializeToString(), retain=True)
    # its report taken in: the row itself exists from enrollment, the labels the deployment selects by come with it
    labelled = lambda: (_get(service, f"/api/v1/devices/{device_id}") or {}).get("labels") == {"site": "lab"}  # noqa: E731
    assert wait_until(labelled, 10)
    assert wait_until(lambda: inbox.payloads(trust_topic(fleet)), 10)  # retained since the service started

    created = api(service, "POST", "/api/v1/deployments", json={"model_id": "digits", "labels": {"site": "lab"}})
    assert created["version"] == mv.version and [t["device_id"] for t in created["targets"]] == [device_id]

    desired_topic = device_topic(device_id, Channel.DESIRED, fleet=fleet)
    assert wait_until(lambda: inbox.payloads(desired_topic), 10)
    state = pb.DesiredState.FromString(inbox.payloads(desired_topic)[-1])
    verified = verify_desired(state, pinned, device_id=device_id, last_counter=0, now_ms=int(time.time() * 1000))
    manifest = verified.manifest
    assert manifest is not None
    [location] = state.artifacts
    assert (location.chunk_size, location.total_chunks) == (65536, 3)

    request = pb.ArtifactChunkRequest(device_id=device_id, request_id="q", sha256=location.sha256, indexes=[0, 1, 2])
    device.publish(device_topic(device_id, Channel.ARTIFACT_REQUEST, fleet=fleet), request.SerializeToString())
    data_topic = device_topic(device_id, Channel.ARTIFACT_DATA, fleet=fleet)
    assert wait_until(lambda: len(inbox.payloads(data_topic)) >= 3, 10)
    chunks = sorted((pb.ArtifactChunk.FromString(p) for p in inbox.payloads(data_topic)), key=lambda c: c.index)
    assert not any(c.error for c in chunks)
    verify_artifact(manifest.artifacts[0], b"".join(c.data for c in chunks))

    done = pb.ReportedState(schema_version=1,
        device_id=device_id, seq=2, ts_ms=int(time.time() * 1000), deployment_id=state.deployment_id,
        desired_generation=state.generation, update_state=pb.UPDATE_STATE_ACTIVE, labels={"site": "lab"},
        active_model=pb.ModelRef(model_id="digits", version=manifest.version, sequence=manifest.sequence),
    )  # fmt: skip
    device.publish(device_topic(device_id, Channel.REPORTED, fleet=fleet), done.SerializeToString(), retain=True)
    window = pb.TelemetryWindow(schema_version=1,
        device_id=device_id, seq=1, window_start_ms=1, window_end_ms=2, inference_count=7,
        model=pb.ModelRef(model_id="digits", version=manifest.version),
        features=[pb.FeatureSketch(index=0, counts=[3, 4])],
    )  # fmt: skip
    for _ in range(2):
        device.publish(device_topic(device_id, Channel.TELEMETRY, fleet=fleet), window.SerializeToString())

    deployment_path = f"/api/v1/deployments/{created['id']}"
    assert wait_until(lambda: api(service, "GET", deployment_path)["status"] == "succeeded", 10)
    assert wait_until(lambda: api(service, "GET", f"/api/v1/devices/{device_id}/telemetry")["windows"] == 1, 10)
    assert service.ingestor is not None and service.ingestor.drain(5)
    assert api(service, "GET", f"/api/v1/devices/{device_id}/telemetry")["inference_count"] == 7
    assert api(service, "GET", f"/api/v1/devices/{device_id}")["active_model_id"] == "digits"
    drift = api(service, "GET", f"/api/v1/devices/{device_id}/drift")
    assert drift["features"][0]["n_observed"] == 7


def _get(service: CloudService, path: str) -> Any:
    response = httpx.get(f"{service.api_url}{path}", timeout=5, headers=operator_headers(service))
    return response.json() if response.status_code == 200 else None


def test_a_second_start_reuses_keys_and_data(tmp_path: Path) -> None:
    settings = CloudSettings(data_dir=tmp_path, api_port=0)
    with CloudService(settings) as first:
        first.register_model_version(manifest_for(b"abc"), {"model.onnx": b"abc"})
        key_id, fleet = first.signer.key_id, first.fleet
    with CloudService(settings) as second:
        assert (second.signer.key_id, second.fleet) == (key_id, fleet)
        assert [m["model_id"] for m in api(second, "GET", "/api/v1/models")] == ["digits"]


def test_two_clouds_on_one_broker_keep_to_their_own_fleets(tmp_path: Path, mqtt_broker: Any, make_transport) -> None:  # type: ignore[no-untyped-def]
    clouds = [
        CloudService(CloudSettings(data_dir=tmp_path / name, mqtt_url=mqtt_broker.url, api_port=0))
        for name in ("a", "b")
    ]
    with clouds[0] as a, clouds[1] as b:
        assert a.fleet != b.fleet and a.transport.wait_connected(10) and b.transport.wait_connected(10)
        enroll(a, "pi-a")
        device, _inbox = make_transport(broker=mqtt_broker)
        hello = pb.ReportedState(schema_version=1, device_id="pi-a", seq=1, ts_ms=int(time.time() * 1000))
        device.publish(device_topic("pi-a", Channel.REPORTED, fleet=a.fleet), hello.SerializeToString(), retain=True)
        assert wait_until(lambda: _get(a, "/api/v1/devices/pi-a") is not None, 10)
        time.sleep(0.5)
        assert _get(b, "/api/v1/devices/pi-a") is None  # no ghost device in the other setup


def test_the_embedded_broker_can_listen_for_devices_on_the_lan(tmp_path: Path) -> None:
    """--mqtt-host 0.0.0.0: the broker listens on every address (devices elsewhere reach it), while the
    cloud's own client still uses loopback."""
    import socket

    settings = CloudSettings(data_dir=tmp_path / "cloud", api_port=0, embedded_mqtt_host="0.0.0.0")
    with CloudService(settings) as service:
        assert service.broker is not None and service.transport.wait_connected(10)
        assert service.mqtt_url == f"mqtt://127.0.0.1:{service.broker.port}"
        server = service.broker._broker._servers["default"].instance  # type: ignore[union-attr]
        assert {s.getsockname()[0] for s in server.sockets} == {"0.0.0.0"}
        lan = socket.gethostbyname(socket.gethostname())  # this machine's own non-loopback address, if any
        with socket.create_connection((lan, service.broker.port), timeout=5):
            pass


def test_devices_are_offline_after_a_restart_on_an_embedded_broker(tmp_path: Path) -> None:
    """The embedded broker keeps no sessions or wills across a restart: a device that died while the cloud was
    down would otherwise stay online forever (nothing else would ever say it went away)."""
    from cloud.db import session_scope
    from cloud.db.tables import Device
    from cloud.fleet import ensure_device

    settings = CloudSettings(data_dir=tmp_path, api_port=0)
    with CloudService(settings) as first:
        assert first.engine is not None
        with session_scope(first.engine) as session:
            device, _ = ensure_device(session, "pi-01")
            device.online = True
            session.add(device)
    with CloudService(settings) as second:
        assert second.engine is not None
        with session_scope(second.engine) as session:
            assert session.get(Device, "pi-01").online is False  # type: ignore[union-attr]
