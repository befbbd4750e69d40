"""Attack: someone who can reach the console API (a real `CloudService` on uvicorn) with no token, a
made-up or revoked token, or a viewer's token tries to change the fleet, to raise their own role, or to
occupy the cloud with one request. Every route that changes anything is tried, found by walking the app,
so a route added later without a guard fails here too."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from cloud.api.auth import api_routes
from cloud.identity.tokens import Role, create_token
from cloud.service import CloudService
from cloud.settings import CloudSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudService]:
    data_dir: Path = tmp_path_factory.mktemp("cloud")
    with CloudService(CloudSettings(data_dir=data_dir, api_port=0)) as running:
        yield running


def _token(service: CloudService, role: Role) -> str:
    assert service.engine is not None
    with Session(service.engine) as session:
        _, text = create_token(session, name=f"attack {role.value}", role=role, created_by="test")
        session.commit()
    return text


def _call(service: CloudService, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"{service.api_url}{path}", headers=headers, timeout=30, **kwargs)


def _changing_routes(service: CloudService) -> list[tuple[str, str]]:
    """Every guarded route that changes anything; the public ones (a device spending its enrollment token)
    are attacked in test_attack_enrollment_tokens and must stay exactly that one route."""
    app = service._server.config.app  # the FastAPI app uvicorn serves
    routes = api_routes(app)
    public = {(method, route.path) for route in routes if route.public for method in route.methods}
    assert public == {("POST", "/api/v1/enroll")}, f"a new public route needs its own attack test: {public}"
    return [
        (method, route.path.replace("{", "").replace("}", ""))  # placeholders as literal path segments
        for route in routes
        if not route.public
        for method in route.methods - {"GET", "HEAD"}
    ]


def _audit_size(service: CloudService, admin: str) -> int:
    response = _call(service, "GET", "/api/v1/audit?limit=1000", admin)
    assert response.status_code == 200
    return len(response.json())


@pytest.mark.parametrize("who", ["no token", "made-up token", "revoked token", "viewer"])
def test_nobody_below_deployer_changes_anything(service: CloudService, who: str) -> None:
    admin = _token(service, Role.ADMIN)
    token = {
        "no token": None,
        "made-up token": "ef_0123456789ab_" + "A" * 43,
        "revoked token": _token(service, Role.DEPLOYER),
        "viewer": _token(service, Role.VIEWER),
    }[who]
    if who == "revoked token":
        token_id = token.split("_")[1]  # type: ignore[union-attr]
        assert _call(service, "DELETE", f"/api/v1/tokens/{token_id}", admin).status_code == 200
    routes = _changing_routes(service)
    assert ("POST", "/api/v1/deployments") in routes and ("POST", "/api/v1/tokens") in routes
    before = _audit_size(service, admin)
    for method, path in routes:
        response = _call(service, method, path, token, json={"model_id": "digits", "device_ids": ["pi-01"]})
        assert response.status_code == (403 if who == "viewer" else 401), (method, path, response.text)
    assert _audit_size(service, admin) == before  # nothing changed, so nothing was recorded


def test_a_deployer_cannot_mint_tokens_or_read_the_audit_log(service: CloudService) -> None:
    deployer = _token(service, Role.DEPLOYER)
    assert _call(service, "POST", "/api/v1/tokens", deployer, json={"name": "x", "role": "admin"}).status_code == 403
    assert _call(service, "GET", "/api/v1/tokens", deployer).status_code == 403
    assert _call(service, "GET", "/api/v1/audit", deployer).status_code == 403


def test_a_million_device_ids_are_refused_before_the_body_is_read(service: CloudService) -> None:
    """13 MB announced, 64 KiB sent: the answer must come without the rest (a client library sending the
    whole body races the server closing the connection, so this speaks HTTP on a plain socket)."""
    deployer = _token(service, Role.DEPLOYER)
    ids = [f"pi-{i:07d}" for i in range(1_000_000)]
    body = json.dumps({"model_id": "digits", "device_ids": ids}).encode()
    url = httpx.URL(service.api_url or "")
    head = (
        f"POST /api/v1/deployments HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer {deployer}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((url.host, url.port or 80), timeout=30) as conn:
        conn.sendall(head.encode() + body[:65536])
        status_line = conn.makefile("rb").readline().decode()
    assert status_line.split()[1] == "413", status_line
    assert _call(service, "GET", "/healthz").status_code == 200  # and the cloud answers on


@pytest.mark.parametrize("path", ["/api/v1/models/dig%00its/versions", "/api/v1/devices/pi%0001"])
def test_a_nul_byte_is_a_clear_422_not_a_500(service: CloudService, path: str) -> None:
    assert _call(service, "GET", path, _token(service, Role.VIEWER)).status_code == 422
