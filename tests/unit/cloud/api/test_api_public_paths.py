"""The paths anyone may call: a client flooding them gets 429 with Retry-After while operators are served
(cloud.api.public_limit), and /healthz answers from a cache at most health_cache_s old, so a flood of it
costs no database query per request (cloud.api.routes.health; counted, not timed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient  # conftest imported it first, quieting its httpx warning
from sqlalchemy import Engine, event

from cloud.api.public_limit import ClientRate
from cloud.api.read_cache import ReadCache
from cloud.identity.tokens import Role

TokenFor = Callable[[str], str]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def health_queries(engine: Engine) -> Iterator[list[str]]:
    """Every `SELECT 1` (the health check's query) the engine runs while the test does."""
    seen: list[str] = []

    def note(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.strip().upper() == "SELECT 1":
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    yield seen
    event.remove(engine, "before_cursor_execute", note)


@pytest.mark.parametrize("app", [{"health_cache_s": 10.0}], indirect=True)
def test_a_flood_of_healthz_costs_one_database_query(anonymous: TestClient, health_queries: list[str]) -> None:
    answers = [anonymous.get("/healthz") for _ in range(50)]
    assert {a.status_code for a in answers} == {200}
    assert answers[-1].json()["status"] == "ok" and answers[-1].json() == answers[0].json()
    assert len(health_queries) == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_healthz_is_checked_again_once_its_answer_is_older_than_its_bound(
    app: FastAPI, anonymous: TestClient, health_queries: list[str]
) -> None:
    clock = Clock()
    ttl = app.state.settings.health_cache_s
    app.state.health_cache = ReadCache(ttl, max_entries=1, clock=clock)
    for _ in range(10):
        assert anonymous.get("/healthz").status_code == 200
    assert len(health_queries) == 1
    clock.now += ttl * 0.5  # within the bound and before its refresh-ahead share: still the same answer
    anonymous.get("/healthz")
    assert len(health_queries) == 1
    clock.now += ttl * 0.6  # older than the bound: never served again
    for _ in range(10):
        anonymous.get("/healthz")
    assert len(health_queries) == 2


@pytest.mark.parametrize("app", [{"public_burst": 5, "public_requests_per_s": 0.1, "public_refusal_hold_s": 0.01}],
                         indirect=True)
def test_a_flood_of_public_paths_gets_429_while_an_operator_is_served(
    app: FastAPI, anonymous: TestClient, token_for: TokenFor
) -> None:
    operator = bearer(token_for(Role.VIEWER))
    statuses, operator_statuses = [], []
    for path in ["/healthz", "/docs", "/openapi.json", "/console/signin", "/console/static/console.css"] * 4:
        answer = anonymous.get(path)
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            assert 1 <= int(answer.headers["retry-after"]) <= 10
            assert answer.json()["error"] == "too_many_requests"
        operator_statuses.append(anonymous.get("/api/v1/devices", headers=operator).status_code)
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429] * 15
    assert operator_statuses == [200] * 20  # authenticated paths are never counted, whatever the address
    # enrollment is not counted: devices behind one NAT enroll together; guessing has its own throttle
    assert anonymous.post("/api/v1/enroll", json={"token": "efe_x_y", "device_id": "pi-01"}).status_code == 403


def test_the_budget_refills_and_is_per_address() -> None:
    clock = Clock()
    rate = ClientRate(per_s=2.0, burst=3, max_clients=2, clock=clock)
    assert [rate.take("a") for _ in range(4)] == [0, 0, 0, 1]
    assert rate.take("b") == 0  # another address has its own bucket
    clock.now += 0.5  # one request's worth
    assert [rate.take("a"), rate.take("a")] == [0, 1]
    rate.take("c")  # a third address: the least recently seen ("b") is forgotten, memory stays bounded
    assert len(rate._buckets) == 2 and "b" not in rate._buckets
    assert rate.refused == 2
