"""The simulator's AgentHost: real agents on one event loop get a real rollout from a real cloud over a real
broker, load the artifact once between them, report the hardware they were given, and come back from a
dropped link and from a crash; a ProcessFleet does the same across worker processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_until
from support.enrollment import enroll

from cloud.db.tables import DeploymentCreate, Device
from cloud.service import CloudService
from cloud.settings import CloudSettings
from cloud.training.pipeline import PipelineResult, TrainingConfig, run_training_pipeline
from protocols.v1 import messages_pb2 as pb
from simulator.host import AgentHost, DeviceSpec
from simulator.process_fleet import ProcessFleet

pytestmark = pytest.mark.integration

DEVICES = [f"host-{n:02d}" for n in range(12)]
PI = pb.DeviceFacts(architecture="aarch64", cpu_model="Raspberry Pi 4 Model B", cpu_count=4,
                    memory_total_bytes=4 << 30)  # fmt: skip


def _active(version: str) -> Any:
    return lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE and s.active_model.version == version


@pytest.fixture
def cloud_and_model(
    mqtt_broker: Any, database_url: str, tmp_path: Path
) -> Iterator[tuple[CloudService, PipelineResult]]:
    settings = CloudSettings(data_dir=tmp_path / "cloud", mqtt_url=mqtt_broker.url, database_url=database_url,
                             api_port=0)  # fmt: skip
    with CloudService(settings) as cloud:
        assert cloud.engine is not None and cloud.store is not None
        yield cloud, run_training_pipeline(cloud.engine, cloud.store, cloud.signer, TrainingConfig(model_id="m"))


def test_a_rollout_reaches_every_agent_on_the_loop(cloud_and_model, mqtt_broker: Any, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cloud, v1 = cloud_and_model
    passwords = enroll(cloud, *DEVICES, labels={"site": "lab"})
    specs = [DeviceSpec(d, {"site": "lab"}, passwords[d], PI if n % 2 else None) for n, d in enumerate(DEVICES)]
    with AgentHost(specs, mqtt_url=mqtt_broker.url, mqtt_protocol=mqtt_broker.mqtt_protocol,
                   trust_path=cloud.trust_chain_path, state_root=tmp_path / "devices") as host:  # fmt: skip
        assert all(t.wait_connected(20) for t in host.transports.values())
        cloud.deployer.deploy(DeploymentCreate(model_id="m", version=v1.version, device_ids=DEVICES))  # type: ignore[union-attr]
        assert host.wait_all(_active(v1.version), 60) == []
        assert host.models is not None and host.models.loads == 1  # one session for the whole fleet
        assert host.self_tests.runs == 1  # and one self-test run: every device's step had its result
        # the jobs (verify, load, self-test) ran on the loop: no pool thread was ever started for them
        assert not [t.name for t in threading.enumerate() if t.name.startswith("edgefleet-sim-jobs")]
        x = v1.split.X_test[:20].astype("float32")
        answers = {tuple(d.agent.predict(x).labels) for d in host.devices.values()}
        assert len(answers) == 1  # the shared model answers every device alike
        reported = host.devices[DEVICES[1]].agent.status().facts
        assert (reported.architecture, reported.cpu_model) == ("aarch64", "Raspberry Pi 4 Model B")

        flaky, crashed = DEVICES[2], DEVICES[3]
        host.disconnect(flaky, offline_s=0.5)
        host.crash(crashed)
        assert wait_until(lambda: not host.transports[flaky].connected, timeout_s=5)
        assert wait_until(lambda: host.transports[flaky].connected, timeout_s=20)
        host.restart(crashed)
        assert host.devices[crashed].agent.wait_for(_active(v1.version), 20)  # restored from its own disk
        assert host.devices[crashed].agent.serving is not None

        def cloud_sees_the_pi() -> bool:
            with cloud.session() as session:
                device = session.get(Device, DEVICES[1])
                return device is not None and device.facts.get("cpu_model") == PI.cpu_model

        assert wait_until(cloud_sees_the_pi, timeout_s=20)


def test_devices_past_the_update_slots_wait_their_turn(cloud_and_model, mqtt_broker: Any, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cloud, v1 = cloud_and_model
    passwords = enroll(cloud, *DEVICES, labels={"site": "lab"})
    specs = [DeviceSpec(d, {"site": "lab"}, passwords[d]) for d in DEVICES]
    with AgentHost(specs, mqtt_url=mqtt_broker.url, mqtt_protocol=mqtt_broker.mqtt_protocol, update_slots=3,
                   trust_path=cloud.trust_chain_path, state_root=tmp_path / "devices") as host:  # fmt: skip
        assert all(t.wait_connected(20) for t in host.transports.values())
        cloud.deployer.deploy(DeploymentCreate(model_id="m", version=v1.version, device_ids=DEVICES))  # type: ignore[union-attr]
        assert host.wait_all(_active(v1.version), 60) == []
        slots = host.update_slots
        assert slots.waited >= len(DEVICES) - 3 and slots.peak == 3  # 3 at a time, the others waited
        assert wait_until(lambda: slots.taken == 0 and slots.queued == 0, timeout_s=5)


def test_a_process_fleet_spreads_devices_over_workers(cloud_and_model, mqtt_broker: Any, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cloud, v1 = cloud_and_model
    ids = [f"proc-{n}" for n in range(4)]
    passwords = enroll(cloud, *ids)
    fleet = ProcessFleet([DeviceSpec(d, password=passwords[d]) for d in ids], workers=2, mqtt_url=mqtt_broker.url,
                         mqtt_protocol=mqtt_broker.mqtt_protocol, trust_path=cloud.trust_chain_path,
                         state_root=tmp_path / "devices")  # fmt: skip
    with fleet:
        assert len(fleet.baseline_rss_kb) == 2 and all(kb > 0 for kb in fleet.baseline_rss_kb)
        assert wait_until(lambda: fleet.connected() == 4, timeout_s=30)
        cloud.deployer.deploy(DeploymentCreate(model_id="m", version=v1.version, device_ids=ids))  # type: ignore[union-attr]
        assert wait_until(lambda: fleet.running(v1.version) == 4, timeout_s=60), fleet.state_counts()
        assert fleet.state_counts() == {f"active {v1.version}": 4}
        assert all(kb > 0 for kb in fleet.rss_kb())
