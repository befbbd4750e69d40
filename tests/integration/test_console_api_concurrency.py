"""100 operators' requests at the same moment, against a real CloudService (uvicorn, embedded SQLite):
every one is answered 200. With the old pool (5 + 10 connections, 30 s timeout) and sessions that held a
connection while waiting for a worker thread, 100 concurrent GETs deadlocked until the pool timed out."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from cloud.db.tables import Device, ModelVersion
from cloud.identity.tokens import Role, create_token
from cloud.service import CloudService
from cloud.settings import CloudSettings

pytestmark = pytest.mark.integration

CLIENTS = 100


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CloudService, str]]:
    data_dir: Path = tmp_path_factory.mktemp("cloud")
    with CloudService(CloudSettings(data_dir=data_dir, api_port=0)) as running:
        assert running.engine is not None
        with Session(running.engine) as session:
            for i in range(20):
                session.add(Device(id=f"pi-{i:02d}", labels={"site": "lab"}))
            for n in range(1, 4):
                session.add(ModelVersion(model_id="iris", version=f"1.0.{n}", sequence=n, signed_manifest=b""))
            _, token = create_token(session, name="load", role=Role.VIEWER, created_by="test")
            session.commit()
        yield running, token


@pytest.mark.parametrize("path", ["/api/v1/models", "/api/v1/devices"])
def test_100_concurrent_requests_all_get_200(service: tuple[CloudService, str], path: str) -> None:
    running, token = service
    start = threading.Barrier(CLIENTS)

    def one(_: int) -> int:
        start.wait(30)  # all at once, each on its own connection
        headers = {"Authorization": f"Bearer {token}", "Connection": "close"}
        try:
            return httpx.get(f"{running.api_url}{path}", headers=headers, timeout=20).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__  # type: ignore[return-value]

    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(pool.map(one, range(CLIENTS)))
    assert statuses == [200] * CLIENTS, {s: statuses.count(s) for s in set(statuses)}
