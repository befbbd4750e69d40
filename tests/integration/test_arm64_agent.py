"""The aarch64 bundle runs a real agent on arm64: Debian bookworm's python3 under qemu-user.

The aarch64 bundle is installed offline into an arm64 root by its own install.sh; that agent is then
provisioned with an enrollment token and run under qemu against a real cloud on a loopback Mosquitto,
beside an x86_64 agent from this checkout. Each model, ONNX then TFLite, must reach both signed, pass
the self-test, activate and be reported; the arm64 agent's gRPC Predict must give the x86 agent's labels.
The agent also tells systemd it is ready and pings the watchdog (a real NOTIFY_SOCKET).

Without debootstrap or qemu-user-static this skips, except under CI (CI=true), where it fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import httpx
import numpy as np
import pytest
from support import free_port, wait_until
from support.arm64_root import arm64_root, installed_agent, missing_tools, qemu
from support.bundles import build_and_unpack, cache_dir
from support.mosquitto import MosquittoBroker

from cloud.cli.operator_token import ensure_dev_token
from cloud.db.tables import DeploymentCreate
from cloud.service import CloudService
from cloud.settings import CloudSettings
from cloud.training.pipeline import TrainingConfig, load_dataset, run_training_pipeline
from protocols.v1 import agent_pb2, agent_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.arm64, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
MODELS = (("digits-onnx", "onnx", "onnxruntime"), ("digits-tflite", "tflite", "tflite"))


@pytest.fixture(scope="module")
def arm64_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(root, venv): the arm64 root and the aarch64 bundle installed in it."""
    missing = missing_tools()
    if missing:
        message = f"needs {', '.join(missing)} (apt-get install debootstrap qemu-user-static)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI the arm64 test must run: {message}")
        pytest.skip(message)
    cache = cache_dir()
    root = arm64_root(cache)
    bundle = build_and_unpack("aarch64", "both", tmp_path_factory.mktemp("bundle-aarch64"))
    return root, installed_agent(root, bundle)


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudService]:
    with MosquittoBroker(tmp_path / "mosquitto") as broker:
        settings = CloudSettings(data_dir=tmp_path / "cloud", mqtt_url=broker.url, api_port=0)
        with CloudService(settings) as service:
            yield service


class Device:
    """One `edgefleet-agent` process: provisioned with a token, run with a local gRPC port."""

    def __init__(self, device_id: str, command: list[str], env: dict[str, str], workdir: Path) -> None:
        self.device_id, self.command, self.env, self.workdir = device_id, command, env, workdir
        self.port = free_port()
        self.config = workdir / device_id / "agent.toml"
        self.log = workdir / f"{device_id}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    def provision(self, cloud: CloudService, headers: dict[str, str]) -> None:
        created = httpx.post(f"{cloud.api_url}/api/v1/enrollment-tokens", json={"device_id": self.device_id},
                             headers=headers, timeout=10)  # fmt: skip
        assert created.status_code == 201, created.text
        done = subprocess.run(
            [*self.command, "provision", "--token", created.json()["token"], "--cloud-url", str(cloud.api_url),
             "--device-id", self.device_id, "--state-dir", str(self.workdir / self.device_id / "state"),
             "--grpc-address", f"127.0.0.1:{self.port}", "--out", str(self.config)],
            capture_output=True, text=True, timeout=300, env=self.env, cwd=self.workdir,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        self._out = self.log.open("wb")
        self.process = subprocess.Popen([*self.command, "--log-level", "INFO", "run", "--config", str(self.config)],
                                        stdout=self._out, stderr=subprocess.STDOUT, cwd=self.workdir,
                                        env={**self.env, **(extra_env or {})})  # fmt: skip

    def predict(self, rows: np.ndarray) -> agent_pb2.PredictResponse:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = agent_pb2_grpc.EdgeInferenceStub(channel)
            request = agent_pb2.PredictRequest(values=rows.reshape(-1).tolist(), rows=len(rows))
            return stub.Predict(request, timeout=60)

    def stop(self) -> int:
        assert self.process is not None
        self.process.terminate()
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if self._out is not None:
            self._out.close()
        return code


def test_the_aarch64_bundle_runs_a_real_agent_under_qemu(
    arm64_venv: tuple[Path, Path], cloud: CloudService, tmp_path: Path
) -> None:
    root, venv = arm64_venv
    assert cloud.engine is not None and cloud.store is not None and cloud.signer is not None
    found = ensure_dev_token(cloud.engine, cloud.settings.data_dir)
    assert found is not None
    headers = {"Authorization": f"Bearer {found[0].read_text().strip()}"}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    arm = Device("pi-arm64", [*qemu(root), str(venv / "bin" / "python"), str(venv / "bin" / "edgefleet-agent")],
                 env, tmp_path)  # fmt: skip
    x86 = Device("pc-x86", [sys.executable, "-m", "edge_agent.cli"], {**env, "PYTHONPATH": str(ROOT)}, tmp_path)
    machine = subprocess.run([*qemu(root), str(venv / "bin" / "python"), "-c", "import platform, edge_agent; "
                              "print(platform.machine(), edge_agent.__file__)"],
                             capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)  # fmt: skip
    assert machine.stdout.split() == ["aarch64", str(venv / "lib" / "python3.11" / "site-packages" /
                                                    "edge_agent" / "__init__.py")], machine.stderr  # fmt: skip
    arm.provision(cloud, headers)
    x86.provision(cloud, headers)

    notify_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(notify_path)
        systemd.settimeout(1)
        arm.start({"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "2000000"})
        x86.start()
        try:
            _deploy_both_models(cloud, headers, arm, x86)
            messages = _received(systemd)
            assert any(m.startswith(b"READY=1") for m in messages), messages
            assert b"WATCHDOG=1" in messages, messages
            assert arm.process is not None and arm.process.poll() is None, arm.log.read_text()
        finally:
            arm_code, x86_code = arm.stop(), x86.stop()
    assert arm_code == 0, arm.log.read_text()[-5000:]
    assert x86_code == 0, x86.log.read_text()[-5000:]


def _received(sock: socket.socket, limit_s: float = 10.0) -> list[bytes]:
    """What the agent has told "systemd" so far (queued in the socket since it started).

    Bounded: the agent pings every second, about as long as the socket's timeout, so reading until a quiet
    second could go on for as long as the agent runs.
    """
    messages, deadline = [], time.monotonic() + limit_s
    sock.settimeout(0.2)
    try:
        while time.monotonic() < deadline:
            messages.append(sock.recv(4096))
    except TimeoutError:
        pass
    return messages


def _deploy_both_models(cloud: CloudService, headers: dict[str, str], arm: Device, x86: Device) -> None:
    assert cloud.engine is not None and cloud.store is not None and cloud.signer is not None
    rows = load_dataset("digits", test_size=0.3, seed=0).X_test[:40].astype(np.float32)

    def device(device_id: str) -> dict[str, Any]:
        response = httpx.get(f"{cloud.api_url}/api/v1/devices/{device_id}", timeout=5, headers=headers)
        return response.json() if response.status_code == 200 else {}

    for model_id, target, runtime in MODELS:
        quantize = "int8" if target == "onnx" else "none"
        result = run_training_pipeline(cloud.engine, cloud.store, cloud.signer,
                                       TrainingConfig(model_id=model_id, target=target, quantize=quantize))  # fmt: skip
        cloud.deployer.deploy(DeploymentCreate(model_id=model_id, device_ids=[arm.device_id, x86.device_id]))  # type: ignore[union-attr]
        for agent in (arm, x86):
            # the device's own report: the cloud knows it from the device's state messages
            wanted = {"active_model_id": model_id, "active_version": result.version, "update_state": "active"}
            reported = wait_until(lambda a=agent, w=wanted: w.items() <= device(a.device_id).items(), timeout_s=300)
            assert reported, (model_id, device(agent.device_id), agent.log.read_text()[-5000:])
        arm_reply, x86_reply = arm.predict(rows), x86.predict(rows)
        assert arm_reply.model.model_id == model_id and arm_reply.model.runtime == runtime, arm_reply.model
        assert x86_reply.model.runtime == runtime
        assert len(arm_reply.labels) == len(rows)
        assert list(arm_reply.labels) == list(x86_reply.labels), model_id
