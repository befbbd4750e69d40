"""Two cloud processes of one fleet on one broker and one database, without a shared subscription: both hear
every chunk request, and each device is answered by exactly one of them (cloud.mqtt.ownership)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from support import wait_until
from support.enrollment import enroll

from cloud.db.tables import DeploymentCreate
from cloud.mqtt.ownership import owner_of
from cloud.service import CloudService
from cloud.settings import CloudSettings
from cloud.training.pipeline import TrainingConfig, run_training_pipeline
from protocols.chunking import chunk_count
from protocols.v1 import messages_pb2 as pb
from simulator.devices import SimulatedFleet

pytestmark = pytest.mark.integration

DEVICES = [f"own-{i:02d}" for i in range(6)]
CHUNK = 1024  # the smallest the settings allow: several chunks per device
TIMEOUT_S = 90.0


def test_two_processes_answer_each_devices_requests_once(mqtt_broker: Any, database_url: str, tmp_path: Path) -> None:
    def settings(name: str) -> CloudSettings:
        return CloudSettings(
            data_dir=tmp_path / name, keys_dir=tmp_path / "keys", artifacts_dir=tmp_path / "artifacts",
            database_url=database_url, mqtt_url=mqtt_broker.url, api_port=0, worker_name=name,
            chunk_size_bytes=CHUNK, artifact_fanout=False,  # every chunk asked per device: all through the servers
        )  # fmt: skip

    with ExitStack() as stack:
        first = stack.enter_context(CloudService(settings("cloud-a")))
        second = stack.enter_context(CloudService(settings("cloud-b")))
        assert first.fleet == second.fleet
        clouds = (first, second)
        # both see both (each writes its row every 5 s): only then does each device have one owner in both views
        assert wait_until(lambda: all(len(c.status()["chunk_request_members"]) == 2 for c in clouds), 20)
        assert first.engine is not None and first.store is not None and first.deployer is not None
        release = run_training_pipeline(first.engine, first.store, first.signer, TrainingConfig(model_id="own-m"))
        fleet = stack.enter_context(
            SimulatedFleet(
                DEVICES, mqtt_url=mqtt_broker.url, mqtt_protocol=mqtt_broker.mqtt_protocol,
                trust_path=first.trust_chain_path, state_root=tmp_path / "devices", passwords=enroll(first, *DEVICES),
            )  # fmt: skip
        )
        first.deployer.deploy(DeploymentCreate(model_id="own-m", version=release.version, device_ids=DEVICES))

        def active(s: pb.ReportedState) -> bool:
            return s.update_state == pb.UPDATE_STATE_ACTIVE and s.active_model.version == release.version

        assert fleet.wait_all(active, TIMEOUT_S) == []
        with first.session() as session:
            from cloud import registry

            mv = registry.get_model_version(session, "own-m", release.version)
            sizes = [a.size_bytes for a in registry.artifacts_of(session, mv.id or 0)]
        per_device = chunk_count(max(sizes), CHUNK)  # the agents all run onnxruntime: one artifact each
        stats = [c.status()["chunks"] for c in clouds]
        sent = [s["chunks_sent"] for s in stats]
        assert sum(sent) == per_device * len(DEVICES), stats  # no chunk answered twice
        # the work was split as rendezvous hashing says: each device's chunks came from its owner alone (member
        # ids carry a random part, so which cloud owns how many varies; ~3 % of runs one owns all six)
        members = first.ownership.members if first.ownership is not None else ()
        assert second.ownership is not None and second.ownership.members == members and len(members) == 2
        owned = [sum(owner_of(d, members) == c.ownership.member_id for d in DEVICES)  # type: ignore[union-attr]
                 for c in clouds]  # fmt: skip
        assert sent == [per_device * n for n in owned], (stats, owned)
        assert [s["not_mine"] > 0 for s in stats] == [n < len(DEVICES) for n in owned], (stats, owned)
        assert all(s["errors_sent"] == 0 for s in stats), stats  # nobody said not_entitled for the other's
