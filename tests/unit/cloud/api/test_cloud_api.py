from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from support.enrollment import enroll

from cloud.db.tables import DatasetCreate, PipelineRunCreate
from cloud.monitoring import Ingestor
from cloud.registry import register_dataset, start_run
from edge_agent.transport import MemoryBroker
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

if TYPE_CHECKING:
    from fastapi.testclient import TestClient


def ingest(engine: Engine, device_id: str, channel: Channel, message: object) -> None:
    Ingestor(engine).process([(device_topic(device_id, channel), message.SerializeToString())])  # type: ignore[attr-defined]


def window(device_id: str, seq: int, counts: list[int], *, labelled: int = 0, correct: int = 0) -> pb.TelemetryWindow:
    return pb.TelemetryWindow(
        schema_version=1,
        device_id=device_id,
        seq=seq,
        window_start_ms=seq * 1000,
        window_end_ms=seq * 1000 + 1000,
        model=pb.ModelRef(model_id="m", version="1", sequence=1),
        inference_count=sum(counts),
        error_count=1,
        latency_us=pb.Histogram(bounds=[100, 200, 400], counts=[0, sum(counts), 0, 0]),
        labelled_count=labelled,
        correct_count=correct,
        features=[pb.FeatureSketch(index=0, counts=counts), pb.FeatureSketch(index=1, counts=[25, 25, 25, 25])],
        predictions=pb.PredictionProfile(labels=["a", "b"], counts=[sum(counts) // 2, sum(counts) - sum(counts) // 2]),
    )


def test_healthz_and_openapi(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["database"] == "ok"
    assert health["components"]["mqtt"] == {"connected": True}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/v1/deployments" in paths and "/api/v1/devices/{device_id}/drift" in paths


def test_models_versions_and_lineage(client: TestClient, engine: Engine, register) -> None:
    with Session(engine) as session:
        register_dataset(session, DatasetCreate(content_hash="h", name="digits", n_rows=3, n_features=2))
        start_run(session, PipelineRunCreate(pipeline="train", dataset_hash="h"), run_id="run-1")
        session.commit()
        register(session, "m")
        register(session, "m")
    assert client.get("/api/v1/models").json() == [
        {"model_id": "m", "latest_version": "2", "latest_sequence": 2, "versions": 2}
    ]
    assert [v["version"] for v in client.get("/api/v1/models/m/versions").json()] == ["2", "1"]
    detail = client.get("/api/v1/models/m/versions/latest").json()
    assert detail["sequence"] == 2 and detail["artifacts"][0]["name"] == "model.onnx"
    assert detail["manifest"]["model_id"] == "m" and "reference" not in detail["manifest"]
    assert "signed_manifest" not in detail
    lineage = client.get("/api/v1/models/m/versions/1/lineage").json()
    assert lineage["metrics"] == {"accuracy": 0.95}
    assert client.get("/api/v1/runs/run-1").json()["dataset_hash"] == "h"
    assert [d["name"] for d in client.get("/api/v1/datasets").json()] == ["digits"]


def test_errors_are_json_with_a_stable_code(client: TestClient) -> None:
    response = client.get("/api/v1/models/nope/versions")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found" and "nope" in response.json()["detail"]
    assert client.get("/api/v1/devices/ghost").status_code == 404
    assert client.get("/api/v1/deployments/none").status_code == 404
    bad_filter = client.get("/api/v1/devices", params={"label": "no-equals-sign"})
    assert (bad_filter.status_code, bad_filter.json()["error"]) == (422, "invalid_request")


def test_post_deployment_publishes_and_reports_per_device_status(
    client: TestClient, engine: Engine, broker: MemoryBroker, register
) -> None:
    with Session(engine) as session:
        register(session, "m")
    enroll(engine, "dev-1", "dev-2")
    ingest(
        engine,
        "dev-1",
        Channel.REPORTED,
        pb.ReportedState(schema_version=1, device_id="dev-1", ts_ms=1, labels={"site": "x"}),
    )
    response = client.post(
        "/api/v1/deployments", json={"model_id": "m", "labels": {"site": "x"}, "device_ids": ["dev-2"]}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["version"] == "1" and created["counts"] == {"pending": 2}
    assert {t["device_id"] for t in created["targets"]} == {"dev-1", "dev-2"}
    assert len(broker.retained_for("ef/v1/default/dev/+/desired")) == 2
    done = pb.ReportedState(
        schema_version=1,
        device_id="dev-1",
        ts_ms=2,
        deployment_id=created["id"],
        desired_generation=1,
        update_state=pb.UPDATE_STATE_ACTIVE,
    )
    ingest(engine, "dev-1", Channel.REPORTED, done)
    detail = client.get(f"/api/v1/deployments/{created['id']}").json()
    assert detail["counts"] == {"succeeded": 1, "pending": 1}
    assert [d["id"] for d in client.get("/api/v1/deployments", params={"model_id": "m"}).json()] == [created["id"]]
    assert client.post("/api/v1/deployments", json={"model_id": "m"}).status_code == 422
    assert client.post("/api/v1/deployments", json={"model_id": "zzz", "device_ids": ["a"]}).status_code == 404
    no_model = client.post("/api/v1/deployments", json={"device_ids": ["a"]})
    assert (no_model.status_code, no_model.json()["error"]) == (422, "invalid_request")  # one error shape
    not_json = client.post("/api/v1/deployments", content=b"{nope", headers={"content-type": "application/json"})
    assert (not_json.status_code, not_json.json()["error"]) == (422, "invalid_request")


def test_devices_telemetry_summary_and_drift(client: TestClient, engine: Engine, register) -> None:
    with Session(engine) as session:
        register(session, "m")
    enroll(engine, "dev-1", "dev-2")
    presence = pb.Presence(schema_version=1, device_id="dev-1", online=True, ts_ms=5)
    ingest(engine, "dev-1", Channel.PRESENCE, presence)
    ingest(
        engine,
        "dev-1",
        Channel.REPORTED,
        pb.ReportedState(schema_version=1, device_id="dev-1", ts_ms=5, labels={"site": "n"}),
    )
    ingest(engine, "dev-1", Channel.TELEMETRY, window("dev-1", 1, [25, 25, 25, 25], labelled=10, correct=9))
    ingest(engine, "dev-1", Channel.TELEMETRY, window("dev-1", 2, [0, 0, 10, 90], labelled=10, correct=7))
    ingest(engine, "dev-2", Channel.TELEMETRY, window("dev-2", 1, [25, 25, 25, 25]))
    devices = client.get("/api/v1/devices", params={"label": "site=n", "online": True}).json()
    assert [d["id"] for d in devices] == ["dev-1"]
    assert client.get("/api/v1/devices", params={"label": "site=s"}).json() == []
    summary = client.get("/api/v1/devices/dev-1/telemetry").json()
    assert (summary["windows"], summary["inference_count"], summary["error_count"]) == (2, 200, 2)
    assert summary["accuracy"] == pytest.approx(0.8)
    assert 100 <= summary["latency_p50_us"] <= 200 and summary["models"] == ["m@1"]
    drift = client.get("/api/v1/devices/dev-1/drift").json()
    by_feature = {f["index"]: f for f in drift["features"]}
    assert by_feature[0]["drifted"] and by_feature[0]["level"] == "significant"
    assert by_feature[1]["level"] == "stable" and not by_feature[1]["drifted"]
    assert drift["predictions"]["level"] == "stable"
    fleet = client.get("/api/v1/models/m/versions/1/drift").json()
    assert fleet["device_id"] is None and fleet["windows"] == 3
    assert {line["device_id"]: line["drifted_features"] for line in fleet["devices"]} == {"dev-1": [0], "dev-2": []}
    assert client.get("/api/v1/devices/dev-1/events").json() == []


def test_an_unfinished_deployment_says_what_it_waits_for(client: TestClient, engine: Engine, register) -> None:
    with Session(engine) as session:
        register(session, "m")
    enroll(engine, "dev-1", "dev-2")
    ingest(engine, "dev-2", Channel.PRESENCE, pb.Presence(schema_version=1, device_id="dev-2", online=True, ts_ms=1))
    created = client.post("/api/v1/deployments", json={"model_id": "m", "device_ids": ["dev-1", "dev-2"]}).json()
    assert created["waiting"] == ("waiting for 2 device(s): 1 offline (dev-1): their desired state waits for them, "
                                  "retained; 1 online still updating or silent (dev-2)")  # fmt: skip
    for device_id in ("dev-1", "dev-2"):
        ingest(engine, device_id, Channel.REPORTED, pb.ReportedState(
            schema_version=1, device_id=device_id, seq=5, ts_ms=5, deployment_id=created["id"],
            desired_generation=1, update_state=pb.UPDATE_STATE_ACTIVE))  # fmt: skip
    done = client.get(f"/api/v1/deployments/{created['id']}").json()
    assert done["status"] == "succeeded" and done["waiting"] is None
