"""The console API's short-lived read cache (cloud.api.read_cache): one load for many concurrent misses, kept
for its TTL, emptied by a write through the API, and a load that straddles a write is not kept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from cloud.api.read_cache import ReadCache
from cloud.db import session_scope
from cloud.db.tables import Device

if TYPE_CHECKING:
    from fastapi.testclient import TestClient


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_misses_share_one_load_and_the_answer_lives_its_ttl() -> None:
    clock = Clock()
    cache: ReadCache[int] = ReadCache(1.0, clock=clock)
    gate = asyncio.Event()

    async def load() -> int:
        await gate.wait()
        return cache.loads

    async def run() -> list[int]:
        waiting = [asyncio.ensure_future(cache.get("k", load)) for _ in range(50)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*waiting)

    assert asyncio.run(run()) == [1] * 50 and cache.loads == 1
    assert asyncio.run(cache.get("k", load)) == 1  # within the TTL: kept
    clock.now += 1.01
    assert asyncio.run(cache.get("k", load)) == 2 and cache.loads == 2  # past it: loaded again


def test_a_load_that_began_before_a_clear_is_served_but_not_kept() -> None:
    cache: ReadCache[str] = ReadCache(60.0)

    async def run() -> tuple[str, str]:
        async def stale() -> str:
            cache.clear()  # a write commits while this load reads
            return "before the write"

        first = await cache.get("k", stale)

        async def fresh() -> str:
            return "after the write"

        return first, await cache.get("k", fresh)

    assert asyncio.run(run()) == ("before the write", "after the write")


def test_a_failed_load_reaches_every_waiter_and_is_not_kept() -> None:
    cache: ReadCache[str] = ReadCache(60.0)

    async def broken() -> str:
        await asyncio.sleep(0.01)
        raise RuntimeError("database gone")

    async def run() -> list[object]:
        return await asyncio.gather(*(cache.get("k", broken) for _ in range(3)), return_exceptions=True)

    assert [type(e) for e in asyncio.run(run())] == [RuntimeError] * 3 and cache.loads == 1

    async def works() -> str:
        return "back"

    assert asyncio.run(cache.get("k", works)) == "back"


def test_zero_seconds_keeps_and_shares_nothing() -> None:
    cache: ReadCache[int] = ReadCache(0.0)

    async def load() -> int:
        return cache.loads

    assert [asyncio.run(cache.get("k", load)) for _ in range(3)] == [1, 2, 3]


def test_a_list_is_served_from_the_cache_until_a_write_through_the_api(client: TestClient, engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(Device(id="pi-01"))
    assert [d["id"] for d in client.get("/api/v1/devices").json()] == ["pi-01"]
    with session_scope(engine) as session:  # a write the API does not see (the ingestor's, say)
        session.add(Device(id="pi-02"))
    assert [d["id"] for d in client.get("/api/v1/devices").json()] == ["pi-01"]  # within api_read_cache_s
    assert client.get("/api/v1/devices", params={"label": "site=lab"}).json() == []  # another key: its own load
    refused = client.post("/api/v1/tokens", json={"name": "x"}, headers={"Authorization": "Bearer ef_x_y"})
    assert refused.status_code == 401  # a refused request changed nothing: the cache stays
    assert [d["id"] for d in client.get("/api/v1/devices").json()] == ["pi-01"]
    assert client.post("/api/v1/tokens", json={"name": "any write", "role": "viewer"}).status_code == 201
    assert [d["id"] for d in client.get("/api/v1/devices").json()] == ["pi-01", "pi-02"]  # emptied by the write


def test_100_concurrent_list_requests_cost_one_query_and_one_token_lookup(
    app: FastAPI, token_for: Callable[[str], str]
) -> None:
    headers = bearer(token_for("viewer"))

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as http:
            answers = await asyncio.gather(*(http.get("/api/v1/models") for _ in range(100)))
        return [a.status_code for a in answers]

    assert asyncio.run(run()) == [200] * 100
    assert app.state.read_cache.loads == 1 and app.state.token_cache.loads == 1


@pytest.mark.parametrize("path", ["/api/v1/models", "/api/v1/devices", "/api/v1/deployments", "/api/v1/rollouts"])
def test_cached_lists_still_need_a_token(anonymous: TestClient, client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200  # now cached
    assert anonymous.get(path).status_code == 401
    assert anonymous.get(path, headers=bearer("ef_abc_wrong")).status_code == 401


def test_a_full_cache_keeps_the_refreshed_value_of_a_key_it_holds() -> None:
    # the health cache holds one key: its refresh ahead was thrown away (the cache was "full"), so every
    # second the answer expired and all waiting requests stalled on a reload
    clock = Clock()
    cache: ReadCache[int] = ReadCache(1.0, max_entries=1, clock=clock)

    async def load() -> int:
        return cache.loads

    async def run() -> None:
        assert await cache.get("k", load) == 1
        clock.now += 0.8  # due for its refresh
        assert await cache.get("k", load) == 1
        for _ in range(3):
            await asyncio.sleep(0)  # the refresh runs
        assert cache.loads == 2 and cache.peek("k") == 2
        clock.now += 0.5  # past the first value's TTL, within the refreshed one's
        assert cache.peek("k") == 2 and cache.loads == 2

    asyncio.run(run())


def test_a_value_due_for_refresh_is_served_while_one_reload_runs_behind_it() -> None:
    # without refresh ahead every reader of a busy key waited for its reload once a TTL (the p99 stall)
    clock = Clock()
    cache: ReadCache[int] = ReadCache(1.0, clock=clock)
    gate = asyncio.Event()

    async def load() -> int:
        if cache.loads > 1:
            await gate.wait()
        return cache.loads

    async def run() -> None:
        assert await cache.get("k", load) == 1
        clock.now += 0.8  # in the last quarter of the TTL: due, still fresh
        assert cache.peek("k") is None  # the fast lane sends this one to `get`, which starts the reload
        answers = [await cache.get("k", load) for _ in range(20)]
        await asyncio.sleep(0)  # the reload starts
        assert answers == [1] * 20 and cache.loads == 2  # nobody waited; one reload shared by all
        assert cache.peek("k") == 1  # a reload is under way: the lane keeps answering
        gate.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert cache.peek("k") == 2 and await cache.get("k", load) == 2
        clock.now += 1.01
        assert cache.peek("k") is None  # never served past its TTL

    asyncio.run(run())


def test_an_expired_value_is_served_while_its_slow_reload_runs_for_at_most_stale_s() -> None:
    # a reload slower than the refresh-ahead quarter (200 devices reporting on a busy 2-core machine: 0.3-1 s)
    # let the value expire under its readers, and every reader then waited for that reload (the API's p99)
    clock = Clock()
    cache: ReadCache[int] = ReadCache(1.0, stale_s=1.0, clock=clock)
    gate = asyncio.Event()

    async def load() -> int:
        if cache.loads > 1:
            await gate.wait()  # the database is slow
        return cache.loads

    async def run() -> None:
        assert await cache.get("k", load) == 1
        clock.now += 0.8  # due: a reload starts behind the answer
        assert await cache.get("k", load) == 1
        await asyncio.sleep(0)
        clock.now += 0.5  # past the TTL, the reload still running
        assert cache.peek("k") == 1  # the fast lane keeps answering
        reader = asyncio.ensure_future(cache.get("k", load))
        await asyncio.sleep(0)
        assert reader.done() and reader.result() == 1  # and so does `get`: nobody waits for the reload
        clock.now += 0.8  # past TTL + stale_s: too old to serve
        assert cache.peek("k") is None
        late = asyncio.ensure_future(cache.get("k", load))
        await asyncio.sleep(0)
        assert not late.done()  # waits for the reload under way (one load, shared)
        gate.set()
        assert await late == 2 and cache.loads == 2 and cache.peek("k") == 2

    asyncio.run(run())


def test_an_expired_value_without_a_reload_under_way_is_never_served() -> None:
    clock = Clock()
    cache: ReadCache[int] = ReadCache(1.0, stale_s=1.0, clock=clock)

    async def load() -> int:
        return cache.loads

    assert asyncio.run(cache.get("k", load)) == 1
    clock.now += 1.01  # nobody read it in its last quarter: no reload started
    assert cache.peek("k") is None
    assert asyncio.run(cache.get("k", load)) == 2  # loaded afresh, not the old value


def test_the_app_serves_lists_and_token_records_a_ttl_late_while_they_reload(app: FastAPI) -> None:
    settings = app.state.settings
    assert app.state.read_cache.stale_s == settings.api_read_cache_s > 0
    assert app.state.token_cache.stale_s == settings.api_token_cache_s > 0
