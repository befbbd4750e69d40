"""The alert webhook against a real HTTP server on loopback: signed bodies the receiver can verify, retries
with backoff on 503, no retry on a refusal, a bounded queue that drops rather than blocks, and a dead or
hanging receiver that never holds up the caller."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.enrollment import enroll

from cloud.monitoring.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSender, sign, verify
from cloud.service import CloudService
from cloud.settings import CloudSettings
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration

SECRET = "s3cret-for-tests"
ARTIFACT = b"model bytes" * 100


class Receiver:
    """A loopback HTTP server that checks every request's signature and answers from a script."""

    def __init__(self, script: list[int], hang_s: float = 0.0) -> None:
        self.script = script  # status codes, in order; then 200
        self.hang_s = hang_s
        self.received: list[dict[str, object]] = []
        self.verified: list[bool] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify(SECRET, self.headers[TIMESTAMP_HEADER], body, self.headers[SIGNATURE_HEADER])
                with receiver.lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                    receiver.verified.append(ok)
                    receiver.received.append({
                        "body": json.loads(body), "delivery": self.headers["X-EdgeFleet-Delivery"],
                        "event": self.headers["X-EdgeFleet-Event"], "status": status,
                    })  # fmt: skip
                if receiver.hang_s:
                    time.sleep(receiver.hang_s)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/edgefleet"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


def test_signed_events_arrive_and_a_503_is_retried_with_the_same_delivery_id(receivers: list[Receiver]) -> None:
    receiver = Receiver([503, 503])
    receivers.append(receiver)
    sender = WebhookSender(receiver.url, SECRET, backoff_s=0.05)
    try:
        assert sender.send("alert.raised", {"alert": {"key": "drift:m@1", "devices": ["odd"]}})
        assert sender.send("alert.cleared", {"alert": {"key": "drift:m@1"}})
        assert sender.wait_idle(10)
    finally:
        sender.stop()
    assert all(receiver.verified) and len(receiver.received) == 4  # 2 refusals, then both events
    first, retry, delivered, second = receiver.received
    assert first["delivery"] == retry["delivery"] == delivered["delivery"] != second["delivery"]
    assert delivered["body"]["alert"] == {"key": "drift:m@1", "devices": ["odd"]}  # type: ignore[index]
    assert delivered["event"] == "alert.raised" and second["event"] == "alert.cleared"
    assert sender.stats.snapshot() == {"queued": 2, "delivered": 2, "retried": 2, "failed": 0, "dropped": 0}


def test_a_forged_or_stale_body_does_not_verify() -> None:
    body = b'{"event":"alert.raised"}'
    now = int(time.time())
    good = sign(SECRET, now, body)
    assert verify(SECRET, str(now), body, good)
    assert not verify("another-secret", str(now), body, good)
    assert not verify(SECRET, str(now), body + b" ", good)
    assert not verify(SECRET, str(now - 3600), body, sign(SECRET, now - 3600, body))  # a replay an hour later
    assert not verify(SECRET, "not-a-number", body, good)
    with pytest.raises(ValueError, match="secret"):
        WebhookSender("http://127.0.0.1:9/", "")


def test_a_refusal_is_not_retried_and_an_unreachable_receiver_is_given_up_on(receivers: list[Receiver]) -> None:
    receiver = Receiver([400])
    receivers.append(receiver)
    refused = WebhookSender(receiver.url, SECRET, backoff_s=0.01)
    unreachable = WebhookSender("http://127.0.0.1:9/nothing-listens", SECRET, attempts=3, backoff_s=0.01)
    try:
        refused.send("alert.raised", {"alert": {}})
        unreachable.send("alert.raised", {"alert": {}})
        assert refused.wait_idle(10) and unreachable.wait_idle(10)
    finally:
        refused.stop()
        unreachable.stop()
    assert len(receiver.received) == 1
    assert refused.stats.snapshot()["failed"] == 1 and refused.stats.snapshot()["retried"] == 0
    assert unreachable.stats.snapshot() == {"queued": 1, "delivered": 0, "retried": 2, "failed": 1, "dropped": 0}


def test_a_hanging_receiver_never_blocks_the_caller_and_the_queue_is_bounded(receivers: list[Receiver]) -> None:
    receiver = Receiver([], hang_s=1.0)
    receivers.append(receiver)
    sender = WebhookSender(receiver.url, SECRET, max_queue=5, timeout_s=0.5, attempts=1)
    try:
        started = time.monotonic()
        accepted = [sender.send("alert.raised", {"alert": {"n": i}}) for i in range(50)]
        assert time.monotonic() - started < 0.5  # 50 sends while the receiver hangs: none waited
        assert 5 <= sum(accepted) <= 6  # the queue's 5, and perhaps one already taken off it
        assert sender.stats.snapshot()["dropped"] == 50 - sum(accepted)
    finally:
        sender.stop(timeout_s=2)


def test_a_cloud_service_announces_a_drift_alert_to_its_webhook_and_its_metrics(
    receivers: list[Receiver], tmp_path: Path
) -> None:
    """The wiring end to end: settings -> the service's alert monitor -> a signed POST and /metrics."""
    receiver = Receiver([])
    receivers.append(receiver)
    settings = CloudSettings(
        data_dir=tmp_path / "cloud", api_port=0, alert_interval_s=0.2, alert_webhook_url=receiver.url,
        alert_webhook_signing_key=SECRET,  # type: ignore[arg-type]  (pydantic makes it a SecretStr)
    )  # fmt: skip
    with CloudService(settings) as service:
        manifest = pb.Manifest(model_id="digits", metrics={"accuracy": 0.95})
        manifest.artifacts.add(name="model.onnx", format=pb.ARTIFACT_FORMAT_ONNX, runtime="onnxruntime",
                               sha256=hashlib.sha256(ARTIFACT).hexdigest(), size_bytes=len(ARTIFACT))  # fmt: skip
        for index in range(2):
            manifest.reference.features.add(index=index, bin_edges=[0, 1, 2, 3, 4], counts=[250] * 4)
        version = service.register_model_version(manifest, {"model.onnx": ARTIFACT}).version
        devices = ["d0", "d1", "odd"]
        enroll(service, *devices)
        end = int(time.time() * 1000) - 1_000
        assert service.ingestor is not None
        service.ingestor.process([
            (device_topic(d, Channel.TELEMETRY, fleet=service.fleet), pb.TelemetryWindow(
                schema_version=1, device_id=d, seq=seq, window_start_ms=end - 60_000 * seq,
                window_end_ms=end - 60_000 * (seq - 1), model=pb.ModelRef(model_id="digits", version=version),
                inference_count=200,
                features=[pb.FeatureSketch(index=0, counts=[50] * 4),
                          pb.FeatureSketch(index=1, counts=[0, 0, 0, 200] if d == "odd" else [50] * 4)],
            ).SerializeToString())
            for d in devices for seq in (1, 2)
        ])  # fmt: skip
        deadline = time.monotonic() + 15
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.received, "no webhook call within 15 s"
        call = receiver.received[0]
        assert receiver.verified == [True] and call["event"] == "alert.raised"
        alert = call["body"]["alert"]  # type: ignore[index]
        assert alert["key"] == f"drift:digits@{version}" and alert["devices"] == ["odd"]
        assert alert["detail"]["drivers"][0]["features"] == [1]
        text = httpx.get(f"{service.api_url}/metrics", timeout=10).text
        values = {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip
        assert values[("edgefleet_alerts_active", (("kind", "drift"),))] == 1
        assert values[("edgefleet_alert_webhook_events_total", (("outcome", "delivered"),))] == 1
        assert values[("edgefleet_alert_transitions_total", (("event", "raised"),))] == 1
