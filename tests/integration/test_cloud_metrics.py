"""GET /metrics of a real CloudService (uvicorn, embedded broker, SQLite): devices enroll, report over MQTT
and send telemetry, a deployment is made, some messages are refused; the Prometheus text, parsed by
prometheus_client's own parser, says exactly that. Many model versions stay within a bounded number of
series. The Grafana dashboard only names metrics this endpoint exports."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlmodel import Session
from support.enrollment import enroll

from cloud.identity.tokens import Role, create_token
from cloud.service import CloudService
from cloud.settings import CloudSettings
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "edgefleet.json"
ARTIFACT = b"model bytes" * 100


def start(tmp_path: Path, **settings: Any) -> CloudService:
    return CloudService(CloudSettings(data_dir=tmp_path / "cloud", api_port=0, **settings)).start()


def token(service: CloudService, role: Role) -> str:
    assert service.engine is not None
    with Session(service.engine) as session:
        _, text = create_token(session, name=f"metrics {role.value}", role=role, created_by="test")
        session.commit()
    return text


def scrape(service: CloudService, bearer: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, as Prometheus would read them."""
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    response = httpx.get(f"{service.api_url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def series(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> dict[tuple[str, ...], float]:
    """label values -> value of one metric's samples."""
    return {tuple(v for _, v in labels): value for (n, labels), value in samples.items() if n == name}


class Device:
    def __init__(
        self, service: CloudService, make_transport: Callable[..., Any], device_id: str, password: str | None = None
    ) -> None:
        self.service, self.device_id, self.seq = service, device_id, 0
        broker = type("B", (), {"url": service.mqtt_url})()
        credentials = {"client_id": device_id, "username": device_id, "password": password} if password else {}
        self.transport, _ = make_transport(broker=broker, protocol=service.mqtt_protocol, **credentials)

    def send(self, channel: Channel, message: Any) -> None:
        payload = message if isinstance(message, bytes) else message.SerializeToString()
        self.transport.publish(device_topic(self.device_id, channel, fleet=self.service.fleet), payload)

    def report(self, model: tuple[str, str] | None, state: int = pb.UPDATE_STATE_ACTIVE, online: bool = True) -> None:
        now = int(time.time() * 1000)
        self.seq += 1
        report = pb.ReportedState(schema_version=1, device_id=self.device_id, seq=self.seq, ts_ms=now,
                                  update_state=state)  # type: ignore[arg-type]
        if model:
            report.active_model.CopyFrom(pb.ModelRef(model_id=model[0], version=model[1]))
        self.send(Channel.REPORTED, report)
        self.send(Channel.PRESENCE, pb.Presence(schema_version=1, device_id=self.device_id, online=online, ts_ms=now))

    def window(self, model: tuple[str, str], inferences: int, errors: int, p95_us: float) -> None:
        self.seq += 1
        end = int(time.time() * 1000)
        self.send(Channel.TELEMETRY, pb.TelemetryWindow(
            schema_version=1, device_id=self.device_id, seq=self.seq, window_start_ms=end - 60_000,
            window_end_ms=end, model=pb.ModelRef(model_id=model[0], version=model[1]),
            inference_count=inferences, error_count=errors, latency_p50_us=p95_us / 2, latency_p95_us=p95_us,
        ))  # fmt: skip


def drained(service: CloudService, received: int) -> None:
    """Wait until the ingestor has taken `received` messages off MQTT and stored them."""
    assert service.ingestor is not None
    deadline = time.monotonic() + 15
    while service.ingestor.stats.snapshot()["received"] < received:
        assert time.monotonic() < deadline, service.ingestor.stats.snapshot()
        time.sleep(0.02)
    assert service.ingestor.drain(10)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudService]:
    # broker auth off: the test sends as an unenrolled id too, to see ingestion count what a broker without
    # our ACL would let through (with auth on, the embedded broker refuses it before ingestion sees it)
    settings = CloudSettings(data_dir=tmp_path_factory.mktemp("cloud"), api_port=0, embedded_broker_auth=False)
    with CloudService(settings) as service:
        yield service


def test_metrics_say_what_the_fleet_sent(fleet: CloudService, make_transport: Callable[..., Any]) -> None:
    service = fleet
    digits = ("digits", "1")
    enroll(service, "pi-01", "pi-02", "pi-03")
    pi1, pi2, pi3, ghost = (Device(service, make_transport, d) for d in ("pi-01", "pi-02", "pi-03", "ghost-9"))
    pi1.report(digits)
    pi2.report(digits)
    pi3.report(None, state=pb.UPDATE_STATE_DOWNLOADING, online=False)
    pi1.window(digits, 100, 2, 4000)
    pi2.window(digits, 300, 1, 8000)
    pi3.window(("digits", "2"), 10, 0, 1000)
    ghost.window(digits, 999, 0, 1)  # not enrolled: refused
    pi1.send(Channel.TELEMETRY, b"\xff\xfe not protobuf")  # malformed
    pi2.send(Channel.TELEMETRY, pb.TelemetryWindow(  # implausible: more errors than inferences
        schema_version=1, device_id="pi-02", seq=99, window_start_ms=1, window_end_ms=2, inference_count=1,
        error_count=5,
    ))  # fmt: skip
    drained(service, 12)
    mv = service.register_model_version(_manifest(), {"model.onnx": ARTIFACT})
    deploy = httpx.post(f"{service.api_url}/api/v1/deployments", timeout=10,
                        headers={"Authorization": f"Bearer {token(service, Role.DEPLOYER)}"},
                        json={"model_id": mv.model_id, "device_ids": ["pi-01", "pi-02", "pi-03"]})
    assert deploy.status_code == 201, deploy.text

    m = scrape(service)  # development: open, no token
    assert series(m, "edgefleet_devices") == {(): 3}
    assert series(m, "edgefleet_devices_online") == {(): 2}
    states = series(m, "edgefleet_devices_by_update_state")
    assert states[("active",)] == 2 and states[("downloading",)] == 1 and sum(states.values()) == 3
    assert series(m, "edgefleet_devices_by_model_version") == {("digits", "1"): 2, ("none", "none"): 1}
    assert series(m, "edgefleet_deployments")[("in_progress",)] == 1
    assert series(m, "edgefleet_deployment_targets")[("pending",)] == 3
    assert series(m, "edgefleet_rollouts") == {(state,): 0 for state in ("running", "paused", "completed",
                                                                         "rolled_back", "cancelled")}

    assert series(m, "edgefleet_model_recent_inferences") == {("digits", "1"): 400, ("digits", "2"): 10}
    assert series(m, "edgefleet_model_recent_errors") == {("digits", "1"): 3, ("digits", "2"): 0}
    assert series(m, "edgefleet_model_recent_windows") == {("digits", "1"): 2, ("digits", "2"): 1}
    p95 = series(m, "edgefleet_model_latency_p95_seconds")  # weighted by inferences: (100*4 + 300*8) / 400 ms
    assert p95[("digits", "1")] == pytest.approx(0.007) and p95[("digits", "2")] == pytest.approx(0.001)
    assert series(m, "edgefleet_model_latency_p95_max_seconds")[("digits", "1")] == pytest.approx(0.008)

    assert series(m, "edgefleet_ingest_messages_received_total") == {(): 12}
    assert series(m, "edgefleet_ingest_messages_accepted_total") == {(): 9}
    refused = series(m, "edgefleet_ingest_messages_refused_total")
    assert refused == {("malformed",): 1, ("foreign",): 0, ("unenrolled",): 1, ("implausible",): 1, ("failed",): 0}
    assert series(m, "edgefleet_ingest_rows_stored_total") == {(): 3}


def test_a_scraper_needs_a_viewer_token_when_settings_say_so(tmp_path: Path) -> None:
    service = start(tmp_path, metrics_require_token=True)
    try:
        anonymous = httpx.get(f"{service.api_url}/metrics", timeout=10)
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        made_up = httpx.get(f"{service.api_url}/metrics", headers={"Authorization": "Bearer ef_x_y"}, timeout=10)
        assert made_up.status_code == 401
        assert series(scrape(service, token(service, Role.VIEWER)), "edgefleet_devices") == {(): 0}
    finally:
        service.stop()


def test_many_model_versions_stay_within_a_bounded_number_of_series(
    tmp_path: Path, make_transport: Callable[..., Any]
) -> None:
    service = start(tmp_path, metrics_max_model_versions=3)
    try:
        ids = [f"pi-{i:02d}" for i in range(12)]
        passwords = enroll(service, *ids)
        for i, device_id in enumerate(ids):
            device = Device(service, make_transport, device_id, passwords[device_id])
            # 3 versions on two devices each, 6 on one device each, which send more inferences
            version = ("digits", str(i % 3)) if i < 6 else ("model", f"v{i}")
            device.report(version)
            device.window(version, 10 + i if i < 6 else 100 + i, 0, 1000)
        drained(service, 36)
        m = scrape(service)
    finally:
        service.stop()
    devices = series(m, "edgefleet_devices_by_model_version")
    assert devices == {("digits", "0"): 2, ("digits", "1"): 2, ("digits", "2"): 2, ("other", "other"): 6}
    inferences = series(m, "edgefleet_model_recent_inferences")
    assert len(inferences) == 4 and ("other", "other") in inferences
    assert sum(inferences.values()) == sum(10 + i for i in range(6)) + sum(100 + i for i in range(6, 12))
    # ranked by what each figure counts: by inferences, the three busiest rare versions keep their names
    assert set(inferences) - {("other", "other")} == {("model", "v9"), ("model", "v10"), ("model", "v11")}


def test_the_dashboard_names_only_metrics_the_endpoint_exports(fleet: CloudService) -> None:
    response = httpx.get(f"{fleet.api_url}/metrics", timeout=10)
    exported = {s.name for f in text_string_to_metric_families(response.text) for s in _samples_or_names(f)}
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(expressions) >= 8
    for expr in expressions:
        named = set(re.findall(r"\bedgefleet_[a-z0-9_]+", expr))
        assert named, f"no EdgeFleet metric in {expr!r}"
        assert named <= exported, f"{expr!r} names {named - exported}, which /metrics does not export"


def _samples_or_names(family: Any) -> list[Sample]:
    # a family with no samples yet (e.g. no telemetry) still exports its name (counters with _total)
    suffix = "_total" if family.type == "counter" else ""
    return list(family.samples) or [Sample(family.name + suffix, {}, 0.0)]


def _manifest() -> pb.Manifest:
    manifest = pb.Manifest(model_id="digits")
    manifest.artifacts.add(
        name="model.onnx", format=pb.ARTIFACT_FORMAT_ONNX, runtime="onnxruntime",
        sha256=hashlib.sha256(ARTIFACT).hexdigest(), size_bytes=len(ARTIFACT),
    )  # fmt: skip
    return manifest
