"""A/B experiments through the console API: results per arm with intervals, promotion in one call,
viewers only read, and every change audited."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conftest import bearer
from sqlalchemy import Engine
from sqlmodel import Session
from support.enrollment import enroll
from support.telemetry_fleet import Clock, TelemetryFleet, version_of

from cloud.cli.experiment import summary
from edge_agent.transport import MemoryBroker

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

DEVICES = [f"ab-{i:02d}" for i in range(10)]


def test_an_experiment_from_start_to_promotion(
    client: TestClient, anonymous: TestClient, token_for, engine: Engine, broker: MemoryBroker, register
) -> None:
    with Session(engine) as session:
        register(session, "m")
        register(session, "m")
    enroll(engine, *DEVICES)
    body = {"model_id": "m", "version_a": "1", "version_b": "2", "device_ids": DEVICES, "min_trials": 200}
    viewer = bearer(token_for("viewer"))
    assert anonymous.post("/api/v1/experiments", json=body, headers=viewer).status_code == 403
    started = client.post("/api/v1/experiments", json=body)
    assert started.status_code == 201, started.text
    experiment = started.json()
    assert [a["assigned"] for a in experiment["arms"]] == [5, 5] and experiment["leader"] is None
    early = client.post(f"/api/v1/experiments/{experiment['id']}/promote", json={})
    assert early.status_code == 409 and "no significant winner" in early.json()["detail"]

    fleet = TelemetryFleet(engine, broker, Clock(), DEVICES)
    fleet.accuracy.update({"1": 0.95, "2": 0.70})
    fleet.live()
    now = anonymous.get(f"/api/v1/experiments/{experiment['id']}", headers=viewer).json()
    a, b = now["arms"]
    assert (a["trials"], b["trials"]) == (500, 500) and a["rate"] > b["rate"]
    assert a["interval"][0] < a["rate"] < a["interval"][1] and now["leader"] == "a"
    promoted = client.post(f"/api/v1/experiments/{experiment['id']}/promote", json={})
    assert promoted.status_code == 200 and promoted.json()["state"] == "promoted" and promoted.json()["winner"] == "a"
    assert {version_of(fleet.desired(d)) for d in DEVICES} == {"1"}  # type: ignore[arg-type]
    printed = summary(promoted.json())  # what `edgefleet experiment status` prints
    assert "promoted, winner a" in printed[0] and printed[1].startswith("  a: v1") and "0.9500 [" in printed[1]
    assert "a is significantly better" in printed[3]
    assert client.post(f"/api/v1/experiments/{experiment['id']}/stop").status_code == 409
    actions = [e["action"] for e in client.get("/api/v1/audit").json()]
    assert actions == ["experiment.promote", "experiment.start"]
    assert client.post("/api/v1/experiments", json={**body, "share_b": 1.5}).status_code == 422
    assert client.get("/api/v1/experiments/nope").status_code == 404
