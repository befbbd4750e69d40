"""The fast lane for cached list reads (cloud.api.fast_reads): a repeated GET is answered from the read cache
with the very bytes the full app gave, and only while both the answer and the token's record are fresh;
a write, a revoked token, no token or a role the route does not allow all go through the full app."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.testclient import TestClient  # conftest imported it first, quieting its httpx warning
from sqlalchemy import Engine
from sqlmodel import Session

from cloud.api.fast_reads import ReadRoutes
from cloud.db.tables import Device
from cloud.identity.tokens import Role

TokenFor = Callable[[str], str]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def served(app: FastAPI) -> int:
    routes: ReadRoutes = app.state.read_routes
    return routes.served


def test_a_repeated_get_takes_the_lane_with_the_same_answer(app: FastAPI, token_for: TokenFor) -> None:
    with TestClient(app, headers=bearer(token_for(Role.VIEWER))) as client:
        first = client.get("/api/v1/devices")
        assert first.status_code == 200 and served(app) == 0  # the full app answered and taught the lane
        again = client.get("/api/v1/devices")
        assert served(app) == 1
        assert again.status_code == 200 and again.content == first.content
        assert again.headers["content-type"] == first.headers["content-type"] == "application/json"
        assert client.get("/api/v1/devices?online=true").status_code == 200 and served(app) == 1  # another query


def test_a_write_through_the_api_empties_the_lane(app: FastAPI, engine: Engine, token_for: TokenFor) -> None:
    with TestClient(app, headers=bearer(token_for(Role.ADMIN))) as client:
        assert client.get("/api/v1/models").json() == [] and client.get("/api/v1/models").json() == []
        before = served(app)
        assert client.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"}).status_code in (200, 201)
        assert client.get("/api/v1/models").status_code == 200 and served(app) == before  # loaded afresh


def test_no_token_a_bad_one_or_a_revoked_one_never_takes_the_lane(
    app: FastAPI, engine: Engine, token_for: TokenFor
) -> None:
    viewer, admin = token_for(Role.VIEWER), token_for(Role.ADMIN)
    with TestClient(app) as client:
        assert client.get("/api/v1/devices", headers=bearer(viewer)).status_code == 200
        assert client.get("/api/v1/devices").status_code == 401
        assert client.get("/api/v1/devices", headers=bearer(viewer + "x")).status_code == 401
        assert client.get("/api/v1/devices", headers={"Authorization": f"Basic {viewer}"}).status_code == 401
        assert served(app) == 0
        listed = client.get("/api/v1/tokens", headers=bearer(admin)).json()
        mine = [t["id"] for t in listed if t["name"] == "test viewer"]
        assert len(mine) == 1
        assert client.delete(f"/api/v1/tokens/{mine[0]}", headers=bearer(admin)).status_code in (200, 204)
        assert client.get("/api/v1/devices", headers=bearer(viewer)).status_code == 401
        assert served(app) == 0


def test_the_lane_holds_a_token_to_the_role_the_route_required(app: FastAPI, engine: Engine,
                                                               token_for: TokenFor) -> None:  # fmt: skip
    with Session(engine) as session:
        session.add(Device(id="pi-01"))
        session.commit()
    viewer = token_for(Role.VIEWER)
    with TestClient(app, headers=bearer(viewer)) as client:
        assert len(client.get("/api/v1/devices").json()) == 1
        routes: ReadRoutes = app.state.read_routes
        key, _ = routes.lookup({"path": "/api/v1/devices", "query_string": b""}) or (None, None)
        routes.remember({"path": "/api/v1/devices", "query_string": b""}, key, Role.ADMIN)  # as if admin-only
        assert client.get("/api/v1/devices").status_code == 200 and served(app) == 0  # the full app decides


def test_a_device_pages_reads_take_the_lane_and_an_unknown_device_stays_404(
    app: FastAPI, engine: Engine, token_for: TokenFor
) -> None:
    """What a device's page reads every few seconds (the device, its telemetry, its events) is answered from
    the read cache like the lists; a refusal (404) is never kept."""
    with Session(engine) as session:
        session.add(Device(id="pi-01"))
        session.commit()
    with TestClient(app, headers=bearer(token_for(Role.VIEWER))) as client:
        for path in ("/api/v1/devices/pi-01", "/api/v1/devices/pi-01/telemetry", "/api/v1/devices/pi-01/events"):
            before = served(app)
            first = client.get(path)
            again = client.get(path)
            assert first.status_code == again.status_code == 200, path
            assert again.content == first.content and served(app) == before + 1, path
        for _ in range(2):
            assert client.get("/api/v1/devices/pi-02/telemetry").status_code == 404
        assert served(app) == 3
