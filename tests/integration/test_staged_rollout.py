"""A staged rollout on real parts, driven as an operator would: `edgefleet rollout plan` and `edgefleet
deploy --strategy canary --wait` against a running cloud, real agents serving traffic and sending
telemetry, the controller judging each wave on it. The canary wave gets the new version first; the rest
only after it passed. Then `deploy --wait` (all at once) back to the first version."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlmodel import Session
from support.enrollment import enroll

from cloud.cli.operator_token import ensure_dev_token
from cloud.db.tables import DeploymentCreate
from cloud.rollout.records import Rollout
from cloud.service import CloudService
from cloud.settings import CloudSettings
from cloud.training.pipeline import TrainingConfig, run_training_pipeline
from edge_agent.errors import NoModelError
from protocols.v1 import messages_pb2 as pb
from simulator.devices import SimulatedFleet

pytestmark = pytest.mark.integration

MODEL_ID = "digits-classifier"
DEVICES = [f"st-{i:02d}" for i in range(5)]


def _active(version: str) -> Any:
    return lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE and s.active_model.version == version


class Traffic:
    """Every device answers the same 20 requests and sends a telemetry window, about every 0.3 s, until
    stopped: stationary traffic, so only a model change can move the prediction distribution."""

    def __init__(self, fleet: SimulatedFleet, rows: np.ndarray) -> None:
        self.fleet, self.rows = fleet, rows.astype(np.float32)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        for _ in range(2000):  # bounded: ~10 minutes at most
            if self._stop.wait(0.3):
                return
            for device in self.fleet.devices.values():
                try:
                    device.agent.predict(self.rows[:20])
                except NoModelError:  # not installed yet: a real client would retry too
                    continue
            self.fleet.flush_telemetry()


@pytest.fixture
def cloud(mqtt_broker: Any, database_url: str, tmp_path: Path) -> Iterator[tuple[CloudService, str]]:
    settings = CloudSettings(data_dir=tmp_path / "cloud", mqtt_url=mqtt_broker.url, database_url=database_url,
                             api_port=0, rollout_tick_s=0.5)  # fmt: skip
    with CloudService(settings) as service:
        found = ensure_dev_token(service.engine, settings.data_dir)  # type: ignore[arg-type]
        assert found is not None
        yield service, found[0].read_text().strip()


def _cli(cloud: CloudService, token: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120", "EDGEFLEET_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "cloud.cli", *args, "--api", cloud.api_url or ""],
                          capture_output=True, text=True, timeout=timeout, env=env)  # fmt: skip


def test_a_canary_then_the_rest_from_the_command_line(
    cloud: tuple[CloudService, str], mqtt_broker: Any, tmp_path: Path
) -> None:
    service, token = cloud
    assert service.engine is not None and service.store is not None and service.deployer is not None
    v1 = run_training_pipeline(service.engine, service.store, service.signer, TrainingConfig(model_id=MODEL_ID))
    v2 = run_training_pipeline(service.engine, service.store, service.signer,
                               TrainingConfig(model_id=MODEL_ID, params={"C": 0.5}))  # fmt: skip
    fleet = SimulatedFleet(DEVICES, mqtt_url=mqtt_broker.url, mqtt_protocol=mqtt_broker.mqtt_protocol,
                           trust_path=service.trust_chain_path, state_root=tmp_path / "devices",
                           passwords=enroll(service, *DEVICES))  # fmt: skip
    with fleet, Traffic(fleet, v1.split.X_test):
        service.deployer.deploy(DeploymentCreate(model_id=MODEL_ID, version=v1.version, device_ids=DEVICES))
        assert fleet.wait_all(_active(v1.version), 60) == []
        target = ["--version", v2.version, "--devices", ", ".join(DEVICES), "--strategy", "canary", "--canary", "2",
                  "--dwell", "1s", "--min-inferences", "20", "--min-devices", "2",
                  "--max-p95-ratio", "100"]  # fmt: skip  (simulated devices share two busy cores: latency is noise)
        plan = _cli(service, token, "rollout", "plan", MODEL_ID, *target)
        assert plan.returncode == 0, plan.stderr
        canaries = plan.stdout.splitlines()[1].split()[3:]  # "  wave 1:     2  st-03, st-01"
        canaries = [c.strip(",") for c in canaries]
        assert len(canaries) == 2 and set(canaries) <= set(DEVICES), plan.stdout

        started = _cli(service, token, "deploy", MODEL_ID, *target, "--wait", "--timeout", "90s")
        assert started.returncode == 0, started.stdout + started.stderr
        lines = started.stdout.splitlines()
        assert lines[0].startswith("rollout ") and "waves 2+3" in lines[0], started.stdout
        assert lines[-1].startswith("completed"), started.stdout
        assert fleet.wait_all(_active(v2.version), 30) == []
        rollout_id = lines[0].split()[1].rstrip(":")
        status = _cli(service, token, "rollout", "status", rollout_id)
        assert status.returncode == 0 and "error_rate" in status.stdout, status.stdout
        assert "open_wave" in status.stdout and "complete" in status.stdout
        with Session(service.engine) as session:
            rollout = session.get(Rollout, rollout_id)
            assert rollout is not None and sorted(rollout.waves[0]) == sorted(canaries)  # the dry run was the plan
        again = _cli(service, token, "rollout", "pause", rollout_id)
        assert again.returncode != 0 and "completed" in again.stderr
        # back to v1 at once (no --strategy), followed until every device answered
        back = _cli(service, token, "deploy", MODEL_ID, "--version", v1.version, "--devices", ",".join(DEVICES),
                    "--wait", "--timeout", "60s")  # fmt: skip
        assert back.returncode == 0 and back.stdout.splitlines()[-1].startswith("succeeded"), back.stdout
        assert fleet.wait_all(_active(v1.version), 30) == []
