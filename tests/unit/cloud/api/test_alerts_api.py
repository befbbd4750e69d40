"""GET /api/v1/alerts: the alert monitor's rows, to viewers and up."""

from __future__ import annotations

from conftest import TestClient  # noqa: E402  (imported under the conftest's warning filter)
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session

from cloud.monitoring import alerts

NOW_MS = 1_700_000_000_000


def test_the_api_lists_alerts_to_viewers(app: FastAPI, token_for, engine: Engine) -> None:
    with Session(engine) as session:
        alerts.apply(session, [alerts.Alert("accuracy", "m", "1", "low", ["d"])], clock=lambda: NOW_MS)
        alerts.apply(session, [alerts.Alert("drift", "m", "2", "moved", ["e"])], clock=lambda: NOW_MS + 1)
        session.commit()
    client = TestClient(app)
    assert client.get("/api/v1/alerts").status_code == 401
    headers = {"Authorization": f"Bearer {token_for('viewer')}"}
    listed = client.get("/api/v1/alerts", headers=headers).json()
    assert [(a["key"], a["active"]) for a in listed] == [("drift:m@2", True), ("accuracy:m@1", False)]
    active = client.get("/api/v1/alerts?active=true", headers=headers).json()
    assert [a["key"] for a in active] == ["drift:m@2"] and active[0]["devices"] == ["e"]
