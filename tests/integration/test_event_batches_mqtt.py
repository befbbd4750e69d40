"""Fewer upward messages per update, on real parts: real agents (the simulator's, on a real Mosquitto) take a
rollout from the real cloud, whose desired states name `event_batch`, so the agents send their lifecycle
events in batches; the cloud stores every event of every device, and the deployment succeeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select
from support import wait_until
from support.enrollment import enroll

from cloud.db.tables import DeploymentCreate, EventRecord
from cloud.service import CloudService
from cloud.settings import CloudSettings
from cloud.training.pipeline import TrainingConfig, run_training_pipeline
from protocols.v1 import messages_pb2 as pb
from simulator.devices import SimulatedFleet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL_ID = "digits-classifier"
DEVICES = [f"eb-{i}" for i in range(3)]
UPDATE = ["update_started", "downloaded", "verified", "self_test_passed", "activated"]


def test_a_rollout_sends_lifecycle_events_in_batches_and_the_cloud_stores_every_one(
    mqtt_broker: Any, database_url: str, tmp_path: Path, make_transport: Any
) -> None:
    settings = CloudSettings(data_dir=tmp_path / "cloud", database_url=database_url, mqtt_url=mqtt_broker.url,
                             api_port=0)  # fmt: skip
    with CloudService(settings) as cloud:
        assert cloud.engine is not None and cloud.store is not None and cloud.deployer is not None
        model = run_training_pipeline(cloud.engine, cloud.store, cloud.signer, TrainingConfig(model_id=MODEL_ID))
        _spy, wire = make_transport(f"ef/v1/{cloud.fleet}/dev/+/events")
        fleet = SimulatedFleet(DEVICES, mqtt_url=mqtt_broker.url, mqtt_protocol=mqtt_broker.mqtt_protocol,
                               trust_path=cloud.trust_chain_path, state_root=tmp_path / "devices",
                               passwords=enroll(cloud, *DEVICES))  # fmt: skip
        with fleet:
            deployment = cloud.deployer.deploy(DeploymentCreate(model_id=MODEL_ID, version=model.version,
                                                                device_ids=DEVICES))  # fmt: skip
            active = lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE and s.active_model.version == model.version  # noqa: E731
            assert fleet.wait_all(active, 120) == []

            def stored() -> dict[str, list[str]]:
                with Session(cloud.engine) as session:
                    rows = session.exec(select(EventRecord).where(EventRecord.deployment_id == deployment.id)).all()
                by_device: dict[str, list[str]] = {d: [] for d in DEVICES}
                for row in sorted(rows, key=lambda r: r.seq):
                    by_device[row.device_id].append(row.kind)
                return by_device

            assert wait_until(lambda: all(kinds == UPDATE for kinds in stored().values()), 30), stored()
        carried = [1 + len(pb.LifecycleEvent.FromString(p).batch) for p in wire.payloads()]
        # self-test passed and activated are emitted in one step: they always travel together
        assert max(carried) >= 2, carried
        assert sum(carried) >= len(DEVICES) * len(UPDATE) > len(carried), carried
