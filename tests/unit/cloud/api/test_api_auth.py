"""Roles on the console API: 401 without a token, 403 below the route's role, 200 at or above it, for every
route family; no /api/v1 route without a role decision; the token routes; the audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session, select
from support.enrollment import enroll

from cloud.api.auth import API_PREFIX, api_router, api_routes, check_routes
from cloud.errors import ConfigurationError
from cloud.identity.records import ApiToken, AuditEntry
from cloud.identity.tokens import Role
from cloud.rollout.director import Director

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

# one route per family, with the role it needs (reads: viewer; changes: deployer; tokens and audit: admin)
READS = [
    ("/api/v1/devices", Role.VIEWER),
    ("/api/v1/models", Role.VIEWER),
    ("/api/v1/deployments", Role.VIEWER),
    ("/api/v1/datasets", Role.VIEWER),
    ("/api/v1/runs", Role.VIEWER),
    ("/api/v1/tokens", Role.ADMIN),
    ("/api/v1/audit", Role.ADMIN),
]
ROLES = list(Role)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("path", "needed"), READS)
def test_reads_need_a_token_and_the_routes_role(anonymous: TestClient, token_for, path: str, needed: Role) -> None:
    response = anonymous.get(path)
    assert response.status_code == 401 and response.json()["error"] == "not_authenticated"
    assert response.headers["www-authenticate"] == "Bearer"
    assert anonymous.get(path, headers=bearer("ef_nope_nope")).status_code == 401
    for role in ROLES:
        response = anonymous.get(path, headers=bearer(token_for(role)))
        expected = 200 if role.allows(needed) else 403
        assert response.status_code == expected, (role, response.text)
        if expected == 403:
            assert response.json()["error"] == "forbidden"


def test_changes_need_deployer_or_admin(anonymous: TestClient, token_for, engine: Engine, register) -> None:
    with Session(engine) as session:
        register(session, "m")
    enroll(engine, "dev-1")
    body = {"model_id": "m", "device_ids": ["dev-1"]}
    assert anonymous.post("/api/v1/deployments", json=body).status_code == 401
    assert anonymous.post("/api/v1/deployments", json=body, headers=bearer(token_for("viewer"))).status_code == 403
    for role in ("deployer", "admin"):
        response = anonymous.post("/api/v1/deployments", json=body, headers=bearer(token_for(role)))
        assert response.status_code == 201, response.text
    # token management is admin's alone, changes included
    new = {"name": "ci", "role": "viewer"}
    assert anonymous.post("/api/v1/tokens", json=new, headers=bearer(token_for("deployer"))).status_code == 403
    assert anonymous.delete("/api/v1/tokens/x", headers=bearer(token_for("deployer"))).status_code == 403


def test_open_routes_stay_open(anonymous: TestClient) -> None:
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/docs").status_code == 200
    assert anonymous.get("/openapi.json").status_code == 200


def test_every_api_route_has_a_role_decision(app: FastAPI) -> None:
    routes = api_routes(app)
    assert len(routes) >= 16  # the walk sees the routes as served, not an empty list
    assert {"/api/v1/devices/{device_id}", "/api/v1/tokens/{token_id}", "/api/v1/audit"} <= {r.path for r in routes}
    # exactly one route is open on purpose: where a device spends its enrollment token
    assert [(r.path, r.public) for r in routes if r.authorizer is None] == [("/api/v1/enroll", True)]
    for route in routes:
        if route.public:
            continue
        authorizer = route.authorizer
        assert authorizer is not None
        for method in route.methods:
            if method not in ("GET", "HEAD"):
                assert authorizer.required_for(method).allows(Role.DEPLOYER), (method, route.path)


def test_an_app_with_an_unguarded_route_does_not_start() -> None:
    from fastapi import APIRouter

    app = FastAPI()
    guarded = api_router(tags=["ok"])
    guarded.add_api_route("/fine", lambda: None)
    bare = APIRouter()
    bare.add_api_route("/oops", lambda: None, methods=["POST"])
    app.include_router(guarded, prefix=API_PREFIX)
    check_routes(app)
    app.include_router(bare, prefix=API_PREFIX)
    with pytest.raises(ConfigurationError, match="/api/v1/oops"):
        check_routes(app)


def test_revoked_and_expired_tokens_are_refused(anonymous: TestClient, client: TestClient, engine: Engine) -> None:
    created = client.post("/api/v1/tokens", json={"name": "short", "role": "viewer"})
    assert created.status_code == 201
    text = created.json()["token"]
    assert anonymous.get("/api/v1/devices", headers=bearer(text)).status_code == 200
    assert client.delete(f"/api/v1/tokens/{created.json()['id']}").json()["revoked_at_ms"] is not None
    assert anonymous.get("/api/v1/devices", headers=bearer(text)).status_code == 401
    with Session(engine) as session:
        row = session.get(ApiToken, created.json()["id"])
        assert row is not None and row.secret_sha256 not in text  # only the hash is kept


def test_token_routes_show_the_secret_once(client: TestClient) -> None:
    created = client.post("/api/v1/tokens", json={"name": "ci", "role": "deployer", "ttl_days": 30}).json()
    assert created["token"].startswith(f"ef_{created['id']}_") and created["expires_at_ms"] is not None
    listed = client.get("/api/v1/tokens").json()
    assert {t["name"] for t in listed} >= {"ci", "test admin"}
    assert all("token" not in t and "secret_sha256" not in t for t in listed)
    assert client.post("/api/v1/tokens", json={"name": "x", "role": "root"}).status_code == 422
    assert client.post("/api/v1/tokens", json={"name": "", "role": "viewer"}).status_code == 422
    assert client.delete("/api/v1/tokens/ghost").status_code == 404


def test_every_change_is_audited_and_admins_page_the_log(
    client: TestClient, anonymous: TestClient, token_for, engine: Engine, register
) -> None:
    with Session(engine) as session:
        register(session, "m")
    deployer = token_for("deployer")
    enroll(engine, "dev-1", "dev-2")
    deployment = anonymous.post("/api/v1/deployments", json={"model_id": "m", "device_ids": ["dev-1", "dev-2"]},
                                headers=bearer(deployer)).json()
    token = client.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"}).json()
    client.delete(f"/api/v1/tokens/{token['id']}")
    log = client.get("/api/v1/audit").json()
    assert [e["action"] for e in log] == ["token.revoke", "token.create", "deployment.create"]
    revoke, create, deploy = log
    assert deploy["target"] == deployment["id"] and deploy["role"] == "deployer"
    assert deploy["actor"] == f"token {deployer.split('_')[1]} (test deployer)"
    assert deploy["detail"] == {"model_id": "m", "version": "1", "devices": 2, "labels": {}}
    assert create["target"] == revoke["target"] == token["id"] and create["role"] == "admin"
    assert all(e["at_ms"] > 0 for e in log)
    page = client.get("/api/v1/audit", params={"limit": 1, "before_id": log[0]["id"]}).json()
    assert [e["id"] for e in page] == [log[1]["id"]]
    assert anonymous.get("/api/v1/audit", headers=bearer(deployer)).status_code == 403


def test_a_failed_change_leaves_no_audit_row(client: TestClient, engine: Engine, register) -> None:
    with Session(engine) as session:
        register(session, "m")
    assert client.post("/api/v1/deployments", json={"model_id": "nope", "device_ids": ["a"]}).status_code == 404
    assert client.post("/api/v1/deployments", json={"model_id": "m", "device_ids": ["a"],
                                                    "strategy": "canary"}).status_code == 422
    assert client.delete("/api/v1/tokens/ghost").status_code == 404
    with Session(engine) as session:
        assert session.exec(select(AuditEntry)).all() == []


def test_the_audit_row_commits_with_the_deployment_or_not_at_all(
    engine: Engine, broker, register, director: Director  # type: ignore[no-untyped-def]
) -> None:
    """A before_commit that fails (the audit write) rolls the deployment back with it."""
    from cloud.db.tables import Deployment, DeploymentCreate
    from cloud.identity import audit
    from cloud.rollout import Deployer
    from edge_agent.transport import MemoryTransport

    with Session(engine) as session:
        register(session, "m")
    transport = MemoryTransport(broker)
    transport.start()
    deployer = Deployer(engine, transport, director=director, chunk_size_bytes=1024)

    def failing_audit(session: Session, deployment: Deployment) -> None:
        audit.record(session, actor="x", action="deployment.create", target=deployment.id)
        raise RuntimeError("audit store unavailable")

    enroll(engine, "a")
    with pytest.raises(RuntimeError):
        deployer.deploy(DeploymentCreate(model_id="m", device_ids=["a"]), before_commit=failing_audit)
    with Session(engine) as session:
        assert session.exec(select(Deployment)).all() == []
        assert session.exec(select(AuditEntry)).all() == []
    assert broker.retained_for("ef/v1/dev/+/desired") == []


def test_metrics_outside_api_v1_is_walked_and_guarded_too(app: FastAPI) -> None:
    from cloud.api.auth import ScrapeAuthorize

    [scrape] = [r for r in api_routes(app) if r.path == "/metrics"]
    assert isinstance(scrape.authorizer, ScrapeAuthorize) and scrape.authorizer.required_for("GET") is Role.VIEWER
    bare = FastAPI()
    bare.add_api_route("/metrics", lambda: None)  # a /metrics with no role decision
    with pytest.raises(ConfigurationError, match="/metrics"):
        check_routes(bare)


def test_metrics_follow_the_setting(anonymous: TestClient, app: FastAPI, token_for) -> None:
    assert anonymous.get("/metrics").status_code == 200  # development: open unless asked otherwise
    app.state.settings = app.state.settings.model_copy(update={"metrics_require_token": True})
    assert anonymous.get("/metrics").status_code == 401
    assert anonymous.get("/metrics", headers=bearer(token_for(Role.VIEWER))).status_code == 200
