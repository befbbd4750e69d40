"""The API's database sessions under pressure (real SQLite engine from cloud.db.make_engine): a GET does
not queue behind a writer's lock, and a request that finds no free connection is answered 503 (with
Retry-After) after the pool timeout instead of hanging."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from cloud.db import session_scope
from cloud.db.engine import MAX_OVERFLOW, POOL_SIZE, POOL_TIMEOUT_S
from cloud.db.tables import Device


def _get_in_thread(client: TestClient, path: str) -> tuple[threading.Thread, list]:
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(client.get(path)), daemon=True)
    thread.start()
    return thread, answers


def test_a_get_reads_while_a_writer_holds_the_sqlite_write_lock(client: TestClient, engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(Device(id="pi-01"))
    with session_scope(engine) as writer:  # BEGIN IMMEDIATE: the write lock, held until the block ends
        writer.add(Device(id="pi-02"))
        writer.flush()
        thread, answers = _get_in_thread(client, "/api/v1/devices")
        thread.join(10)  # before: the GET waited for the lock (busy_timeout, 30 s)
        assert not thread.is_alive()
        assert answers[0].status_code == 200
        assert [d["id"] for d in answers[0].json()] == ["pi-01"]  # the snapshot before the write


def test_no_free_connection_is_a_503_after_the_pool_timeout(client: TestClient, engine: Engine) -> None:
    # /api/v1/tokens: a read the list cache does not answer, so it needs a connection
    assert client.get("/api/v1/tokens").status_code == 200  # the token works (and its verdict is cached)
    with ExitStack() as held:
        for _ in range(POOL_SIZE + MAX_OVERFLOW):  # every connection the pool may open, checked out here
            held.callback(engine.raw_connection().close)  # a checkout, no transaction
        started = time.monotonic()
        thread, answers = _get_in_thread(client, "/api/v1/tokens")
        thread.join(POOL_TIMEOUT_S + 10)
        assert not thread.is_alive()
    assert answers[0].status_code == 503, answers[0].text
    assert answers[0].json()["error"] == "unavailable" and answers[0].headers["Retry-After"] == "1"
    assert POOL_TIMEOUT_S - 0.5 < time.monotonic() - started < POOL_TIMEOUT_S + 5
    assert client.get("/api/v1/tokens").status_code == 200  # and it recovers once connections are back
