"""Staged rollouts through the console API: the dry-run plan is the plan, the first wave opens at once,
deployers steer, viewers only read, every change is audited, and bad requests get one clear error."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conftest import bearer
from sqlalchemy import Engine
from sqlmodel import Session, select
from support.enrollment import enroll

from cloud.identity.records import AuditEntry

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

DEVICES = [f"pi-{i:02d}" for i in range(8)]


def _body(**rollout: object) -> dict[str, object]:
    return {"deployment": {"model_id": "m", "device_ids": DEVICES},
            "rollout": {"strategy": "waves", "first_wave": 2, "growth": 2, **rollout}}  # fmt: skip


def test_the_dry_run_shows_the_waves_the_rollout_then_gets(client: TestClient, engine: Engine, register) -> None:
    with Session(engine) as session:
        register(session, "m")
    enroll(engine, *DEVICES)
    plan = client.post("/api/v1/rollouts/plan", json=_body())
    assert plan.status_code == 200, plan.text
    assert [len(w) for w in plan.json()["waves"]] == [2, 4, 2] and plan.json()["targets"] == 8
    with Session(engine) as session:
        assert session.exec(select(AuditEntry)).all() == []  # a dry run writes nothing
    created = client.post("/api/v1/rollouts", json=_body())
    assert created.status_code == 201, created.text
    rollout = created.json()
    assert rollout["state"] == "running" and rollout["current_wave"] == 0 and rollout["wave_sizes"] == [2, 4, 2]
    assert [d["action"] for d in rollout["decisions"]] == ["open_wave"]
    assert client.get(f"/api/v1/rollouts/{rollout['deployment_id']}/gates").json() == []  # nothing judged yet
    detail = client.get(f"/api/v1/rollouts/{rollout['deployment_id']}").json()
    assert detail["deployment_id"] == rollout["deployment_id"]
    targets = client.get(f"/api/v1/deployments/{rollout['deployment_id']}").json()["targets"]
    assert sorted(t["device_id"] for t in targets) == sorted(plan.json()["waves"][0])  # the first wave only


def test_deployers_steer_viewers_read_and_each_change_is_audited(
    client: TestClient, anonymous: TestClient, token_for, engine: Engine, register
) -> None:
    with Session(engine) as session:
        register(session, "m")
    enroll(engine, *DEVICES)
    rollout_id = client.post("/api/v1/rollouts", json=_body()).json()["deployment_id"]
    viewer, deployer = bearer(token_for("viewer")), bearer(token_for("deployer"))
    assert anonymous.get(f"/api/v1/rollouts/{rollout_id}", headers=viewer).status_code == 200
    assert anonymous.post(f"/api/v1/rollouts/{rollout_id}/pause", headers=viewer).status_code == 403
    assert anonymous.post("/api/v1/rollouts/plan", json=_body(), headers=viewer).status_code == 403
    paused = anonymous.post(f"/api/v1/rollouts/{rollout_id}/pause", headers=deployer)
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    again = anonymous.post(f"/api/v1/rollouts/{rollout_id}/pause", headers=deployer)
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    assert anonymous.post(f"/api/v1/rollouts/{rollout_id}/explode", headers=deployer).status_code == 404
    assert anonymous.post(f"/api/v1/rollouts/{rollout_id}/rollback", headers=deployer).json()["state"] == "rolled_back"
    assert client.get(f"/api/v1/deployments/{rollout_id}").json()["status"] == "rolled_back"
    actions = [e["action"] for e in client.get("/api/v1/audit").json()]
    assert actions == ["rollout.rollback", "rollout.pause", "rollout.create"]


def test_bad_rollout_requests_get_one_clear_error(client: TestClient, engine: Engine, register) -> None:
    with Session(engine) as session:
        register(session, "m")
    enroll(engine, *DEVICES)
    for rollout, needle in [
        ({"strategy": "canary", "canary": 2.5}, "whole count"),
        ({"strategy": "blue-green"}, "strategy"),
        ({"growth": 0.5}, "growth"),
        ({"gates": {"max_error_rate": 2}}, "max_error_rate"),
    ]:
        response = client.post("/api/v1/rollouts", json={"deployment": {"model_id": "m", "device_ids": DEVICES},
                                                         "rollout": rollout})  # fmt: skip
        assert response.status_code == 422 and needle in response.text, (rollout, response.text)
    nothing = client.post("/api/v1/rollouts", json={"deployment": {"model_id": "m", "labels": {"site": "mars"}}})
    assert nothing.status_code == 422 and "no device matches" in nothing.json()["detail"]
    assert client.get("/api/v1/rollouts/none").status_code == 404
    assert client.get("/api/v1/rollouts").json() == []


def test_a_rollouts_status_comes_from_the_read_cache_and_an_action_shows_at_once(
    client: TestClient, engine: Engine, register
) -> None:
    """The console polls a rollout's status: a repeat is answered by the fast lane, and an operator's action
    through the API empties the cache, so the next read shows it."""
    with Session(engine) as session:
        register(session, "m")
    enroll(engine, *DEVICES)
    rollout_id = client.post("/api/v1/rollouts", json=_body()).json()["deployment_id"]
    lane = client.app.state.read_routes  # type: ignore[attr-defined]
    first = client.get(f"/api/v1/rollouts/{rollout_id}")
    before = lane.served
    again = client.get(f"/api/v1/rollouts/{rollout_id}")
    assert again.content == first.content and lane.served == before + 1
    assert client.post(f"/api/v1/rollouts/{rollout_id}/pause").json()["state"] == "paused"
    assert client.get(f"/api/v1/rollouts/{rollout_id}").json()["state"] == "paused"


def test_a_rollouts_view_counts_its_targets_without_reading_them_one_by_one(
    client: TestClient, engine: Engine, register
) -> None:
    """Polled by `rollout status --wait` and every rollout page: at fleet size a row per target per poll."""
    from sqlalchemy import event

    from cloud.db import TargetStatus
    from cloud.db.tables import DeploymentTarget

    with Session(engine) as session:
        register(session, "m")
    enroll(engine, *DEVICES)
    rollout_id = client.post("/api/v1/rollouts", json=_body()).json()["deployment_id"]
    with Session(engine) as session:
        first, second = session.exec(select(DeploymentTarget).where(DeploymentTarget.deployment_id == rollout_id))
        first.status, second.status = TargetStatus.SUCCEEDED, TargetStatus.FAILED
        session.add_all([first, second])
        session.commit()
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:  # noqa: ANN001
        statements.append(" ".join(statement.lower().split()))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        detail = client.get(f"/api/v1/rollouts/{rollout_id}").json()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert (detail["devices_done"], detail["devices_failed"]) == (1, 1)
    target_reads = [s for s in statements if "from deploymenttarget" in s.replace('"', "")]
    assert target_reads and all("count(" in s for s in target_reads), target_reads
