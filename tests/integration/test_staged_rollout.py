"""A staged rollout on real parts, driven as an operator would: `edgefleet rollout plan` and `edgefleet
deploy --strategy canary --wait` against a running cloud, real agents serving traffic and sending
telemetry, the controller judging each wave on it. The canary wave gets the new version first; the rest
only after it passed. Then `deploy --wait` (all at once) back to the first version."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session
from support.enrollment import enroll
from support.fleet_traffic import Traffic, cloud_with_token

from cloud.db.tables import DeploymentCreate
from cloud.rollout.records import Rollout
from cloud.service import CloudService
from cloud.training.pipeline import TrainingConfig, run_training_pipeline
from protocols.v1 import messages_pb2 as pb
from simulator.devices import SimulatedFleet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # ~40 s alone; over 300 s at load 20

MODEL_ID = "digits-classifier"
DEVICES = [f"st-{i:02d}" for i in range(5)]


def _active(version: str) -> Any:
    return lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE and s.active_model.version == version


@pytest.fixture
def cloud(mqtt_broker: Any, database_url: str, tmp_path: Path) -> Iterator[tuple[CloudService, str]]:
    with cloud_with_token(mqtt_broker, database_url, tmp_path / "cloud") as found:
        yield found


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
                  "--max-p95-ratio", "100", "--min-p95-increase-us", "1000000"]  # fmt: skip
        # (simulated devices share two busy cores: latency is noise; a loaded machine made p95 100x worse)
        plan = _cli(service, token, "rollout", "plan", MODEL_ID, *target)
        assert plan.returncode == 0, plan.stderr
        canaries = wave_members(plan.stdout, 1)
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


def wave_members(plan: str, wave: int) -> list[str]:
    """The device ids `rollout plan` lists under "wave N: k device(s)" (wrapped over indented lines)."""
    lines = [line.strip() for line in plan.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith(f"wave {wave}:"))
    members: list[str] = []
    for line in lines[start + 1 :]:
        if not line or line.startswith(("wave ", "skipped", "cannot")) or ":" in line:
            break
        members += [device.strip() for device in line.split(",") if device.strip()]
    return members
