"""Attack: someone who can reach the console API (a real `CloudService` on uvicorn) but has no token floods
the paths that need none (/healthz here, 40 connections at once). They get 429 with Retry-After, the
cloud's database sees one health query a second at most, and an operator's requests beside the flood are
all answered 200 (cloud.api.public_limit, cloud.api.routes.health). Counted, never timed: every loop is
bounded in requests and seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event
from support.api_tokens import operator_token

from cloud.identity.tokens import Role
from cloud.service import CloudService
from cloud.settings import CloudSettings

pytestmark = pytest.mark.integration

FLOODERS = 40
REQUESTS_EACH = 15
BUDGET = 50  # the flooding address's burst (public_burst); per_s small so the test cannot refill it
DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudService]:
    data_dir: Path = tmp_path_factory.mktemp("cloud")
    settings = CloudSettings(data_dir=data_dir, api_port=0, public_burst=BUDGET, public_requests_per_s=0.01,
                             public_refusal_hold_s=0.2)  # fmt: skip
    with CloudService(settings) as running:
        yield running


def test_a_healthz_flood_gets_429s_while_an_operator_is_served(service: CloudService) -> None:
    assert service.engine is not None
    token = operator_token(service, Role.VIEWER, "operator")
    health_queries: list[str] = []

    def note(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.strip().upper() == "SELECT 1":
            health_queries.append(statement)

    event.listen(service.engine, "before_cursor_execute", note)
    deadline = time.monotonic() + DEADLINE_S
    flooding = threading.Event()

    def flood(_: int) -> list[tuple[int, str | None]]:
        answers = []
        with httpx.Client(base_url=service.api_url or "", timeout=20) as http:  # kept alive, as a flooder would
            flooding.set()
            for _ in range(REQUESTS_EACH):
                if time.monotonic() > deadline:
                    break
                answer = http.get("/healthz")
                answers.append((answer.status_code, answer.headers.get("retry-after")))
        return answers

    operator_codes: list[int] = []
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(FLOODERS + 1) as pool:
            flooders = [pool.submit(flood, i) for i in range(FLOODERS)]
            flooding.wait(30)
            with httpx.Client(base_url=service.api_url or "", timeout=20,
                              headers={"Authorization": f"Bearer {token}"}) as operator:  # fmt: skip
                while len(operator_codes) < 20 and time.monotonic() < deadline and not all(f.done() for f in flooders):
                    operator_codes.append(operator.get("/api/v1/devices").status_code)
            answers = [a for f in flooders for a in f.result(DEADLINE_S)]
    finally:
        event.remove(service.engine, "before_cursor_execute", note)
    elapsed = time.monotonic() - started
    codes = [code for code, _ in answers]
    assert set(codes) <= {200, 429}
    assert codes.count(200) <= BUDGET  # the burst, then nothing more for this address
    assert codes.count(429) >= len(codes) - BUDGET > 0
    assert all(retry is not None and int(retry) >= 1 for code, retry in answers if code == 429)
    assert operator_codes and set(operator_codes) == {200}  # served beside the flood
    # a health answer is at most health_cache_s (1 s) old: one query a second, not one a request
    assert len(health_queries) <= elapsed / service.settings.health_cache_s + 2
    after = httpx.get(f"{service.api_url}/api/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=20)
    assert after.status_code == 200  # and the cloud answers on
