"""The whole loop on real parts: pipeline -> signed model version -> real broker -> real agents ->
verified, chunked delivery -> self-test -> activation -> inference -> telemetry -> console API.

And the refusals a running agent must make while it keeps serving its previous model: a tampered
artifact (digest mismatch) and a manifest signed by a key the pinned root never named.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from support import wait_until
from support.enrollment import enroll

from cloud import registry
from cloud.cli.operator_token import ensure_dev_token
from cloud.db.tables import DeploymentCreate
from cloud.registry.keys import KeyStore
from cloud.service import CloudService
from cloud.settings import CloudSettings
from cloud.training.pipeline import PipelineResult, TrainingConfig, run_training_pipeline
from protocols.v1 import messages_pb2 as pb
from simulator.devices import SimulatedFleet

pytestmark = pytest.mark.integration

MODEL_ID = "digits-classifier"
DEVICES = ["e2e-01", "e2e-02"]
TIMEOUT_S = 60.0


@dataclass
class Loop:
    cloud: CloudService
    fleet: SimulatedFleet
    v1: PipelineResult
    api: httpx.Client


def _active(version: str) -> Any:
    return lambda s: s.update_state == pb.UPDATE_STATE_ACTIVE and s.active_model.version == version


def _failed_with(code: str) -> Any:
    return lambda s: s.update_state == pb.UPDATE_STATE_FAILED and s.last_error.code == code


@pytest.fixture
def loop(mqtt_broker: Any, database_url: str, tmp_path: Path) -> Iterator[Loop]:
    settings = CloudSettings(
        data_dir=tmp_path / "cloud", mqtt_url=mqtt_broker.url, database_url=database_url, api_port=0
    )
    with CloudService(settings) as cloud:
        assert cloud.engine is not None and cloud.store is not None
        v1 = run_training_pipeline(cloud.engine, cloud.store, cloud.signer, TrainingConfig(model_id=MODEL_ID))
        fleet = SimulatedFleet(
            DEVICES,
            mqtt_url=mqtt_broker.url,
            mqtt_protocol=mqtt_broker.mqtt_protocol,
            trust_path=cloud.trust_chain_path,
            state_root=tmp_path / "devices",
            passwords=enroll(cloud, *DEVICES),
        )
        found = ensure_dev_token(cloud.engine, settings.data_dir)  # the admin token `up` makes in development
        assert found is not None
        headers = {"Authorization": f"Bearer {found[0].read_text().strip()}"}
        with fleet, httpx.Client(base_url=cloud.api_url or "", timeout=10, headers=headers) as api:
            cloud.deployer.deploy(DeploymentCreate(model_id=MODEL_ID, version=v1.version, device_ids=DEVICES))  # type: ignore[union-attr]
            assert fleet.wait_all(_active(v1.version), TIMEOUT_S) == []
            yield Loop(cloud, fleet, v1, api)


def test_the_loop_delivers_serves_and_reports(loop: Loop) -> None:
    split = loop.v1.split
    for device in loop.fleet.devices.values():
        labels = device.agent.predict(split.X_test.astype(np.float32)).labels
        accuracy = float(np.mean(np.asarray(labels) == split.y_test.astype(str)))
        # the INT8 artifact on the device answers like the scikit-learn model did in the pipeline
        assert accuracy >= loop.v1.metrics["accuracy"] - 0.02, accuracy

    for device in loop.fleet.devices.values():
        for x, y in zip(split.X_test[:40], split.y_test[:40], strict=True):
            device.agent.predict(x[None, :].astype(np.float32), label=str(y))
    assert loop.fleet.flush_telemetry() == len(DEVICES)

    def telemetry_arrived() -> bool:
        return all(
            loop.api.get(f"/api/v1/devices/{d}/telemetry").json().get("labelled_count", 0) >= 40 for d in DEVICES
        )

    assert wait_until(telemetry_arrived, timeout_s=20)
    summary = loop.api.get(f"/api/v1/devices/{DEVICES[0]}/telemetry").json()
    assert summary["inference_count"] >= 40 + len(split.X_test)
    assert 0.8 <= summary["accuracy"] <= 1.0
    assert summary["latency_p50_us"] > 0 and summary["latency_p95_us"] >= summary["latency_p50_us"]

    devices = {d["id"]: d for d in loop.api.get("/api/v1/devices").json()}
    assert {devices[d]["active_version"] for d in DEVICES} == {loop.v1.version}
    assert all(devices[d]["update_state"] == "active" for d in DEVICES)
    lineage = loop.api.get(f"/api/v1/models/{MODEL_ID}/versions/{loop.v1.version}/lineage").json()
    assert lineage["dataset"]["content_hash"] == split.content_hash

    # one upload for the rollout: every chunk went out once on the fleet-wide topics, none per device
    status = loop.cloud.status()
    assert status["fanout"]["artifacts_published"] == 1 and status["fanout"]["chunks_published"] >= 1, status
    assert status["chunks"]["chunks_sent"] == 0, status


def _serving_version(loop: Loop, device_id: str) -> str:
    agent = loop.fleet.devices[device_id].agent
    x = loop.v1.split.X_test[:5].astype(np.float32)
    assert agent.predict(x).labels is not None  # still answering
    return agent.status().active_model.version


def test_a_tampered_artifact_is_refused_and_the_old_model_keeps_serving(loop: Loop, tmp_path: Path) -> None:
    cloud = loop.cloud
    assert cloud.engine is not None and cloud.store is not None and cloud.signer is not None
    v2 = run_training_pipeline(
        cloud.engine, cloud.store, cloud.signer, TrainingConfig(model_id=MODEL_ID, params={"C": 0.3})
    )
    with cloud.session() as session:
        mv = registry.get_model_version(session, MODEL_ID, v2.version)
        digests = [record.sha256 for record in registry.artifacts_of(session, mv.id)]
    assert digests
    for sha256 in digests:  # flip one byte of each stored artifact, keeping its size
        path = cloud.store.path_of(sha256)  # type: ignore[union-attr]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    target = DEVICES[0]
    cloud.deployer.deploy(DeploymentCreate(model_id=MODEL_ID, version=v2.version, device_ids=[target]))  # type: ignore[union-attr]
    agent = loop.fleet.devices[target].agent
    assert agent.wait_for(_failed_with("digest_mismatch"), TIMEOUT_S), agent.status()
    assert _serving_version(loop, target) == loop.v1.version
    assert wait_until(
        lambda: loop.api.get(f"/api/v1/devices/{target}").json().get("last_error_code") == "digest_mismatch",
        timeout_s=20,
    )


def test_a_manifest_signed_by_an_unknown_key_is_refused(loop: Loop, tmp_path: Path) -> None:
    cloud = loop.cloud
    assert cloud.store is not None
    with cloud.session() as session:
        v1 = registry.get_model_version(session, MODEL_ID, loop.v1.version)
        manifest = registry.manifest_of(v1)
        blobs = {a.name: cloud.store.get(a.sha256) for a in manifest.artifacts}
        manifest.sequence = registry.next_sequence(session, MODEL_ID)
        manifest.version = f"{manifest.sequence}-rogue"
    rogue_keys = KeyStore(tmp_path / "rogue-keys")  # a key hierarchy the devices never pinned
    rogue_keys.init(cloud.fleet)
    rogue = rogue_keys.manifest_signer()
    with cloud.session() as session:
        registry.register_signed_model_version(session, rogue.sign(manifest), blobs, store=cloud.store)

    target = DEVICES[1]
    cloud.deployer.deploy(DeploymentCreate(model_id=MODEL_ID, version=manifest.version, device_ids=[target]))  # type: ignore[union-attr]
    agent = loop.fleet.devices[target].agent
    # the device refuses it without changing any state, keeps serving v1, and tells the cloud why
    assert wait_until(
        lambda: any(
            e.get("error_code") == "unknown_key" and e.get("kind") == "verification_failed"
            for e in loop.api.get(f"/api/v1/devices/{target}/events").json()
        ),
        timeout_s=20,
    )
    assert agent.status().update_state == pb.UPDATE_STATE_ACTIVE and not agent.status().last_error.code
    assert _serving_version(loop, target) == loop.v1.version
