"""Bounded requests: a body over the cap is a 413 before it is read, lists and selectors are capped, NUL
anywhere in a request is a 422 in the usual {error, detail} shape."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from cloud.api.limits import BodySizeLimit
from cloud.db.bounds import MAX_DEPLOYMENT_DEVICES, MAX_SELECTOR_LABELS
from cloud.db.tables import Deployment
from cloud.identity.records import AuditEntry

if TYPE_CHECKING:
    from fastapi.testclient import TestClient


def test_a_million_device_ids_are_refused_at_once(client: TestClient, engine: Engine, register) -> None:
    with Session(engine) as session:
        register(session, "m")
    body = json.dumps({"model_id": "m", "device_ids": [f"device-{i:07d}" for i in range(1_000_000)]}).encode()
    assert len(body) > 10_000_000  # the 10.9 MB request of the issue
    started = time.perf_counter()
    response = client.post("/api/v1/deployments", content=body, headers={"content-type": "application/json"})
    elapsed = time.perf_counter() - started
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
    assert elapsed < 5.0  # loose: it ran 4.5 minutes before the cap
    with Session(engine) as session:
        assert session.exec(select(Deployment)).all() == [] and session.exec(select(AuditEntry)).all() == []


def test_a_chunked_body_is_cut_off_once_past_the_cap() -> None:
    """No Content-Length: the middleware counts streamed bytes and stops reading at the cap."""
    reads = 0
    app_called = False

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        nonlocal app_called
        app_called = True

    async def receive():  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}  # endless

    sent: list[dict] = []

    async def send(message) -> None:  # type: ignore[no-untyped-def]
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"transfer-encoding", b"chunked")]}
    asyncio.run(BodySizeLimit(app, max_bytes=10_000)(scope, receive, send))
    assert not app_called and reads == 11  # 11,000 bytes read, then it stopped
    assert sent[0]["status"] == 413 and json.loads(sent[1]["body"])["error"] == "payload_too_large"


def test_a_body_within_the_cap_reaches_the_app_whole() -> None:
    parts = [b'{"a": ', b"1}"]
    seen: list[bytes] = []

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        seen.append((await receive())["body"])

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

    async def send(message) -> None:  # type: ignore[no-untyped-def]
        pass

    asyncio.run(BodySizeLimit(app, max_bytes=100)({"type": "http", "headers": []}, receive, send))
    assert seen == [b'{"a": 1}']


def test_device_id_lists_and_selectors_are_bounded(client: TestClient, engine: Engine, register) -> None:
    with Session(engine) as session:
        register(session, "m")
    too_many = client.post("/api/v1/deployments",
                           json={"model_id": "m", "device_ids": [f"d{i}" for i in range(MAX_DEPLOYMENT_DEVICES + 1)]})
    assert (too_many.status_code, too_many.json()["error"]) == (422, "invalid_request")
    assert len(too_many.content) < 2000  # the refused list is not echoed back
    labels = {f"k{i}": "v" for i in range(MAX_SELECTOR_LABELS + 1)}
    assert client.post("/api/v1/deployments", json={"model_id": "m", "labels": labels}).status_code == 422
    for bad in ({"site lab": "x"}, {"site": "a/#"}, {"site": ""}):
        assert client.post("/api/v1/deployments", json={"model_id": "m", "labels": bad}).status_code == 422
    assert client.get("/api/v1/devices", params={"label": "site=a b"}).status_code == 422
    assert client.get("/api/v1/devices", params={"label": [f"k{i}=v" for i in range(17)]}).status_code == 422
    assert client.get("/api/v1/devices", params={"label": "site=lab-1"}).status_code == 200
    with Session(engine) as session:
        assert session.exec(select(Deployment)).all() == []


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/api/v1/devices/dev%001", {}),
        ("GET", "/api/v1/models/m%00/versions", {}),
        ("GET", "/api/v1/deployments", {"params": {"model_id": "m\x00"}}),
        ("GET", "/api/v1/devices/dev-1/drift", {"params": {"version": "\x00"}}),
        ("POST", "/api/v1/deployments", {"json": {"model_id": "m\x00", "device_ids": ["a"]}}),
        ("POST", "/api/v1/deployments", {"json": {"model_id": "m", "version": "1\x00", "device_ids": ["a"]}}),
        ("POST", "/api/v1/deployments", {"json": {"model_id": "m", "device_ids": ["a\x00"]}}),
        ("POST", "/api/v1/deployments", {"json": {"model_id": "m", "labels": {"site": "x\x00"}}}),
        ("POST", "/api/v1/tokens", {"json": {"name": "ci\x00", "role": "viewer"}}),
        ("DELETE", "/api/v1/tokens/ab%00cd", {}),
    ],
)
def test_nul_anywhere_is_a_422(client: TestClient, method: str, path: str, kwargs: dict) -> None:
    response = client.request(method, path, **kwargs)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request" and response.json()["detail"]
