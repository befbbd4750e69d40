from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlmodel import Session
from support.enrollment import enroll

from cloud.monitoring import Ingestor
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

from conftest import bearer  # noqa: E402


def test_labels_posted_to_the_api_give_accuracy_per_device_with_an_interval(
    client: TestClient, anonymous: TestClient, token_for, engine: Engine, register
) -> None:
    with Session(engine) as session:
        register(session, "m")
    enroll(engine, "d1")
    samples = [pb.Sample(input=[1.0], prediction="a", ts_ms=1000 + i) for i in range(4)]
    batch = pb.SampleBatch(schema_version=1, device_id="d1", seq=7, model=pb.ModelRef(model_id="m", version="1"),
                           samples=samples)  # fmt: skip
    Ingestor(engine).process([(device_topic("d1", Channel.SAMPLES), batch.SerializeToString())])
    labels = [{"device_id": "d1", "prediction_id": f"7:{i}", "label": "a" if i < 3 else "b"} for i in range(4)]
    viewer = anonymous.post("/api/v1/feedback", json={"labels": labels}, headers=bearer(token_for("viewer")))
    assert viewer.status_code == 403
    posted = client.post("/api/v1/feedback", json={"labels": labels})
    assert posted.status_code == 201 and posted.json() == {"received": 4, "stored": 4}
    assert client.post("/api/v1/feedback", json={"labels": labels}).json()["stored"] == 0  # first label wins
    bad = client.post("/api/v1/feedback", json={"labels": [{"device_id": "d 1", "prediction_id": "x", "label": "a"}]})
    assert bad.status_code == 422
    (line,) = client.get("/api/v1/models/m/versions/latest/accuracy?by=device").json()
    assert line["key"] == "d1" and (line["labelled"], line["correct"]) == (4, 3)
    assert line["low"] < 0.75 < line["high"]
    assert client.get("/api/v1/models/m/versions/latest/accuracy?by=week").status_code == 422
    assert client.get("/api/v1/audit").json()[0]["action"] == "feedback.record"
