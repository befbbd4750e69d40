"""POST /models/{id}/retrain and the alias routes: roles, refusals, and a retrain run through the API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session

from cloud.db.tables import SampleRecord
from cloud.identity.tokens import Role
from cloud.monitoring import feedback
from cloud.registry.artifacts import MemoryArtifactStore
from cloud.training import retrain as loop
from cloud.training.pipeline import TrainingConfig, run_training_pipeline
from protocols.signing import Signer
from simulator.data import DataStream, Drift

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

from conftest import bearer  # noqa: E402


def test_aliases_move_with_a_reason_and_keep_their_history(
    client: TestClient, token_for, engine: Engine, register
) -> None:
    with Session(engine) as session:
        register(session, "m")
        register(session, "m")
    assert client.get("/api/v1/models/m/aliases").json() == {"current": {}, "history": []}
    viewer = bearer(token_for(Role.VIEWER))
    assert client.post("/api/v1/models/m/aliases/champion", json={"version": "1", "reason": "r"},
                       headers=viewer).status_code == 403  # fmt: skip
    assert client.post("/api/v1/models/m/aliases/champion", json={"version": "1"}).status_code == 422  # no reason
    assert client.post("/api/v1/models/m/aliases/latest", json={"version": "1", "reason": "r"}).status_code == 422
    assert client.post("/api/v1/models/m/aliases/champion", json={"version": "9", "reason": "r"}).status_code == 404
    for version in ("1", "2"):
        moved = client.post("/api/v1/models/m/aliases/champion", json={"version": version, "reason": f"to {version}"})
        assert moved.status_code == 200, moved.text
    body = client.get("/api/v1/models/m/aliases", headers=viewer).json()
    assert body["current"] == {"champion": "2"}
    assert [(m["from_version"], m["to_version"], m["reason"]) for m in body["history"]] == [
        (None, "1", "to 1"), ("1", "2", "to 2")]
    assert all(m["actor"] for m in body["history"])


def test_retrain_through_the_api_registers_a_winning_challenger_for_approval(
    app: FastAPI, client: TestClient, engine: Engine, signer: Signer
) -> None:
    store = MemoryArtifactStore()
    assert client.post("/api/v1/models/digits-classifier/retrain", json={}).status_code == 503  # no store here
    champion = run_training_pipeline(engine, store, signer, TrainingConfig())
    X, y = DataStream(champion.split.X_test, champion.split.y_test, seed=3,
                      drift=Drift(tuple(int(i) for i in np.argsort(-champion.split.X_train.std(axis=0))[:6]),
                                  shift=3.0)).batch(200)  # fmt: skip
    with Session(engine) as session:
        session.add_all(SampleRecord(device_id="d1", batch_seq=1, position=i, model_id=champion.model_id,
                                     model_version="1", input=X[i].tolist(), prediction="?", ts_ms=i,
                                     prediction_id=str(i)) for i in range(len(X)))  # fmt: skip
        feedback.record(session, [feedback.Label("d1", str(i), str(y[i])) for i in range(len(y))])
        session.commit()

    def retrain(model_id: str, **options: Any) -> loop.RetrainResult:
        return loop.retrain(engine, store, signer, model_id, **options)

    app.state.services.retrain = retrain
    assert client.post("/api/v1/models/digits-classifier/retrain", json={"margin": 2}).status_code == 422
    done = client.post("/api/v1/models/digits-classifier/retrain", json={"reason": "site b drifted"})
    assert done.status_code == 201, done.text
    body = done.json()
    assert body["outcome"] == "win" and body["challenger"] == "2" and body["deployment_id"] is None
    assert body["field"]["gain_low"] > 0.02 and body["trigger"].endswith("site b drifted")
    assert set(body["datasets"]) == {"reference", "field", "field_train", "field_eval"}
    assert client.get("/api/v1/models/digits-classifier/aliases").json()["current"] == {
        "champion": "1", "challenger": "2"}
