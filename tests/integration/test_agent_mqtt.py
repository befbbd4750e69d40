"""The real agent over a real broker with a real ONNX model: update, serve, restart, gRPC, `agent run`.

A small in-test cloud (a PahoTransport) publishes the retained desired state and answers chunk requests;
the model is a LogisticRegression converted with skl2onnx (test-only imports)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from support import wait_until
from support.fake_cloud import CHUNK_REQUESTS, FakeCloud
from support.releases import Release, make_keys

from edge_agent.agent import Agent
from edge_agent.config import load_settings
from edge_agent.connect import transport_for
from edge_agent.serving.grpc_server import start_grpc_server
from protocols.chunking import chunk_count
from protocols.signing import Signer
from protocols.topics import Channel, device_topic
from protocols.v1 import agent_pb2, agent_pb2_grpc
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHUNK_SIZE = 1024


@pytest.fixture(scope="module")
def onnx_model() -> tuple[bytes, Any, np.ndarray]:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    model = LogisticRegression().fit(x, y)
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    return onx.SerializeToString(), model, x


def _release(signer: Signer, data: bytes, model: Any, x: np.ndarray, sequence: int) -> pb.SignedManifest:
    manifest = pb.Manifest(
        model_id="lr",
        version=str(sequence),
        sequence=sequence,
        created_at_ms=int(time.time() * 1000),
        io=pb.IoSchema(
            inputs=[pb.TensorSpec(name="X", dtype="float32", shape=[-1, 3])],
            task=pb.TASK_CLASSIFICATION,
            class_labels=["0", "1"],
            n_features=3,
        ),
    )
    manifest.artifacts.add(
        name="model.onnx",
        format=pb.ARTIFACT_FORMAT_ONNX,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        runtime="onnxruntime",
        predicted_output="label",
        scores_output="probabilities",
    )
    for row, label in zip(x[:10], model.predict(x[:10]), strict=True):
        manifest.self_test.vectors.add(input=row.tolist(), expected_label=str(label))
    manifest.self_test.min_label_agreement = 1.0
    for i in range(3):
        manifest.reference.features.add(index=i, bin_edges=[-2, -1, 0, 1, 2], counts=[1, 1, 1, 1])
    return signer.sign(manifest)


def _settings(tmp_path: Path, broker: Any, trust_path: Path, **extra: Any) -> Any:
    return load_settings(
        device_id="pi-int-1",
        mqtt_url=broker.url,
        mqtt_protocol=broker.mqtt_protocol,
        trust_path=trust_path,
        state_dir=tmp_path / "state",
        grpc_address="",
        chunk_window=4,
        chunk_timeout_s=2.0,
        telemetry_first_window_rows=0,  # the tests count every call in the window they flush (no early first window)
        **extra,
    )


def test_real_agent_real_broker_real_onnx(tmp_path: Path, mqtt_broker: Any, make_transport: Any, onnx_model) -> None:  # type: ignore[no-untyped-def]
    data, model, x = onnx_model
    keys = make_keys(tmp_path / "keys")
    signed = _release(keys.signer, data, model, x, sequence=1)
    cloud_transport, _ = make_transport()
    cloud = FakeCloud(cloud_transport, chunk_size=CHUNK_SIZE, topic_filter=CHUNK_REQUESTS, start=False)
    _watcher, watched = make_transport(f"ef/v1/{keys.fleet}/dev/pi-int-1/#")
    cloud.deploy("pi-int-1", Release.of(signed, [data], keys), generation=1)

    settings = _settings(tmp_path, mqtt_broker, keys.trust_path)
    agent = Agent(settings, transport_for(settings, reconnect_min_s=0.1, reconnect_max_s=1.0))
    agent.start()
    server = None
    try:
        assert agent.wait_for(lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE and s.desired_generation == 1, 30), (
            agent.status()
        )
        batch = x[100:140]
        assert agent.predict(batch).labels == [str(v) for v in model.predict(batch)]
        assert len(cloud.requests) >= chunk_count(len(data), CHUNK_SIZE) // 4

        server = start_grpc_server(agent, "127.0.0.1:0")
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = agent_pb2_grpc.EdgeInferenceStub(channel)
            reply = stub.Predict(agent_pb2.PredictRequest(values=x[:2].reshape(-1).tolist(), rows=2), timeout=5)
            assert list(reply.labels) == [str(v) for v in model.predict(x[:2])]
            assert reply.model.model_id == "lr" and reply.model.runtime == "onnxruntime"
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(agent_pb2.PredictRequest(values=[1.0, 2.0, 3.0, 4.0]), timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "expected 1 row(s) x 3 features = 3 values, got 4" in str(info.value.details())
            status = stub.Status(agent_pb2.StatusRequest(), timeout=5)
            assert status.state.active_model.sequence == 1 and status.inference_count == 42

        presence = device_topic("pi-int-1", Channel.PRESENCE, fleet=keys.fleet)
        assert wait_until(lambda: any(pb.Presence.FromString(p).online for p in watched.payloads(presence)), 10)
        window = agent.flush_telemetry()
        assert window is not None and window.inference_count == 42
        telemetry = device_topic("pi-int-1", Channel.TELEMETRY, fleet=keys.fleet)
        assert wait_until(lambda: watched.payloads(telemetry), 10)
    finally:
        if server is not None:
            server.stop(0)
        agent.stop()
    assert wait_until(lambda: not pb.Presence.FromString(watched.payloads(presence)[-1]).online, 10)

    again = Agent(settings, transport_for(settings, reconnect_min_s=0.1, reconnect_max_s=1.0))
    again.start()
    try:
        assert again.predict(x[:5]).labels == [str(v) for v in model.predict(x[:5])]  # served at once
        requests = len(cloud.requests)
        assert again.wait_for(lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE, 10)
        time.sleep(0.3)  # the retained desired state arrives again: nothing is fetched
        assert len(cloud.requests) == requests
    finally:
        again.stop()


def test_agent_run_command_serves_and_exits_cleanly_on_sigterm(
    tmp_path: Path, mqtt_broker: Any, make_transport: Any
) -> None:
    keys = make_keys(tmp_path / "keys")
    config = tmp_path / "etc" / "agent.toml"
    script = (
        "import sys, argparse, logging\nfrom edge_agent.cli import register\n"
        "p = argparse.ArgumentParser(); p.add_argument('--log-level', default='WARNING')\n"
        "register(p.add_subparsers())\na = p.parse_args(sys.argv[1:])\n"
        "logging.basicConfig(level=a.log_level)\nsys.exit(a.func(a))\n"
    )
    provision = [
        sys.executable,
        "-c",
        script,
        "agent",
        "provision",
        "--device-id",
        "pi-cli-1",
        "--mqtt-url",
        mqtt_broker.url,
        "--trust",
        str(keys.trust_path),
        "--state-dir",
        str(tmp_path / "state"),
        "--out",
        str(config),
        "--grpc-address",
        "127.0.0.1:0",
    ]
    subprocess.run(provision, cwd=ROOT, check=True, timeout=60, capture_output=True)
    with config.open("a") as fh:
        fh.write(f'mqtt_protocol = "{mqtt_broker.mqtt_protocol}"\n')
    _watcher, watched = make_transport(f"ef/v1/{keys.fleet}/dev/pi-cli-1/presence")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "agent.log"
    with log.open("w") as output:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, "--log-level", "INFO", "agent", "run", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            online = wait_until(lambda: any(pb.Presence.FromString(p).online for p in watched.payloads()), 30)
            assert online, log.read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert "running" in log.read_text()
    assert wait_until(lambda: not pb.Presence.FromString(watched.payloads()[-1]).online, 10)
