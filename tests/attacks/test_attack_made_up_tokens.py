"""Attack: someone who can reach the console API (a real `CloudService` on uvicorn) floods `/api/v1/*` with
made-up bearer tokens, a new token id each request, from the address an operator also uses (a NAT). Each
cost a database lookup, unlimited. Now the address gets `auth_lookup_burst` lookups, then 429 with
Retry-After and no lookup; replaying a token refused before costs no lookup (a 401, whatever the budget);
the operator's admitted token is served 200 throughout, each of its requests looked up (the token cache is
off here, so nothing else spares the database); the console's cookie check spends the same budget.
Counted, never timed: every loop is bounded in requests and seconds (cloud.api.auth_budget)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event
from sqlmodel import Session
from support.api_tokens import operator_token

from cloud.identity.records import ApiToken
from cloud.identity.tokens import Role
from cloud.service import CloudService
from cloud.settings import CloudSettings

pytestmark = pytest.mark.integration

FLOODERS = 8
REQUESTS_EACH = 40
BURST = 10  # the address's lookups at once; per_s so small the test cannot refill it
DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudService]:
    data_dir: Path = tmp_path_factory.mktemp("cloud")
    settings = CloudSettings(data_dir=data_dir, api_port=0, auth_lookup_burst=BURST, auth_lookups_per_s=0.01,
                             api_token_cache_s=0)  # fmt: skip
    with CloudService(settings) as running:
        yield running


def made_up() -> str:
    return f"ef_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def test_made_up_tokens_get_429_before_any_lookup_while_the_operator_is_served(service: CloudService) -> None:
    assert service.engine is not None and service.api_url is not None
    token = operator_token(service, Role.VIEWER, "operator")
    operator_id = token.split("_")[1]
    lookups: list[str] = []  # token ids the database was asked for

    def note(_conn: object, _cursor: object, statement: str, parameters: object, *_args: object) -> None:
        if "FROM api_token" in statement:
            values = parameters.values() if isinstance(parameters, dict) else parameters
            lookups.extend(str(v) for v in values or () if isinstance(v, str))  # type: ignore[union-attr]

    deadline = time.monotonic() + DEADLINE_S
    refused = made_up()
    with httpx.Client(base_url=service.api_url, timeout=20) as http:
        assert http.get("/api/v1/devices", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert http.get("/api/v1/devices", headers={"Authorization": f"Bearer {refused}"}).status_code == 401
        event.listen(service.engine, "before_cursor_execute", note)
        try:

            def flood(_: int) -> list[tuple[int, str | None]]:
                answers = []
                with httpx.Client(base_url=service.api_url or "", timeout=20) as own:
                    for _ in range(REQUESTS_EACH):
                        if time.monotonic() > deadline:
                            break
                        answer = own.get("/api/v1/devices", headers={"Authorization": f"Bearer {made_up()}"})
                        answers.append((answer.status_code, answer.headers.get("retry-after")))
                return answers

            def as_operator() -> int:
                return http.get("/api/v1/devices", headers={"Authorization": f"Bearer {token}"}).status_code

            with ThreadPoolExecutor(FLOODERS) as pool:
                flooders = [pool.submit(flood, i) for i in range(FLOODERS)]
                operator_codes = []
                while len(operator_codes) < 10 and time.monotonic() < deadline:
                    operator_codes.append(as_operator())
                answers = [a for f in flooders for a in f.result(DEADLINE_S)]
            # the budget is spent: the operator, from the same address, is still served
            operator_codes.append(as_operator())
        finally:
            event.remove(service.engine, "before_cursor_execute", note)
        before_replays = [v for v in lookups if v != operator_id]
        event.listen(service.engine, "before_cursor_execute", note)
        try:
            replays = [http.get("/api/v1/devices", headers={"Authorization": f"Bearer {refused}"}) for _ in range(20)]
        finally:
            event.remove(service.engine, "before_cursor_execute", note)

    codes = [code for code, _ in answers]
    assert len(codes) == FLOODERS * REQUESTS_EACH and set(codes) <= {401, 429}
    assert codes.count(401) <= BURST and codes.count(429) >= len(codes) - BURST  # the operator's first, one refused
    assert all(after is not None and int(after) >= 1 for code, after in answers if code == 429)
    made_up_lookups = [v for v in lookups if v != operator_id]
    assert len(before_replays) <= BURST, f"{len(before_replays)} lookups for {len(codes)} made-up tokens"
    assert made_up_lookups == before_replays  # 20 replays of a token refused before: no lookup
    assert {r.status_code for r in replays} == {401}  # refused before the budget is asked: the same answer
    assert operator_codes and set(operator_codes) == {200}
    assert lookups.count(operator_id) >= len(operator_codes)  # looked up every time: admitted, never budgeted
    # the console checks its cookie (and a pasted token) within the same budget: a made-up cookie is a 429
    # without a lookup now, while the operator signs in with its admitted token and reads pages
    lookups.clear()
    event.listen(service.engine, "before_cursor_execute", note)
    try:
        with httpx.Client(base_url=service.api_url, timeout=20) as browser:
            forged = [browser.get("/console", headers={"Cookie": f"edgefleet_console={made_up()}"}) for _ in range(5)]
            signin = browser.post("/console/signin", data={"token": token, "next": "/console"},
                                  headers={"Origin": service.api_url})  # fmt: skip
            assert signin.status_code == 303, signin.text
            assert browser.get("/console").status_code == 200
    finally:
        event.remove(service.engine, "before_cursor_execute", note)
    assert [r.status_code for r in forged] == [429] * 5 and all(r.headers.get("retry-after") for r in forged)
    assert [v for v in lookups if v != operator_id] == []
    with httpx.Client(base_url=service.api_url, timeout=20) as http:  # the cloud is still up
        assert http.get("/healthz").status_code == 200


def made_up_tagged() -> str:
    """The shape of an id the cloud issues now (12 random hex and a 10-hex tag), with a tag nobody made."""
    return f"ef_{secrets.token_hex(11)}_{secrets.token_urlsafe(32)}"


def legacy_token(service: CloudService, name: str) -> str:
    """A token as issued before ids carried a tag: 12 random hex, nothing the cloud can check unlooked-up."""
    assert service.engine is not None
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with Session(service.engine) as session:
        digest = sha256(secret.encode()).hexdigest()
        session.add(ApiToken(id=token_id, name=name, role=Role.VIEWER.value, secret_sha256=digest))
        session.commit()
    return f"ef_{token_id}_{secret}"


@pytest.fixture
def fresh_service(database_url: str, tmp_path: Path) -> Iterator[CloudService]:
    """A cloud (SQLite, or PostgreSQL with EDGEFLEET_TEST_DATABASE_URL) that has admitted no token yet, as
    after a restart."""
    settings = CloudSettings(data_dir=tmp_path / "cloud", database_url=database_url, api_port=0,
                             auth_lookup_burst=BURST, auth_lookups_per_s=0.01, api_token_cache_s=0)  # fmt: skip
    with CloudService(settings) as running:
        yield running


def test_an_operator_is_served_on_its_first_request_while_its_address_floods_made_up_tokens(
    fresh_service: CloudService,
) -> None:
    """The operator's token is one this API process never admitted (its first request after a restart), and
    the flooder at its address has spent the address's budget: the token's id carries the cloud's tag, so it
    is looked up without asking the budget (200), while made-up ids of the tagged shape are refused with no
    lookup at all (401, never 429) and made-up ids of the old shape still get the budget's 429. Tokens issued
    before tags still work, through the budget as before."""
    service = fresh_service
    assert service.engine is not None and service.api_url is not None
    operator = operator_token(service, Role.VIEWER, "operator")
    legacy_seen, legacy_unseen = legacy_token(service, "old-ci"), legacy_token(service, "old-cron")
    known_ids = {t.split("_")[1] for t in (operator, legacy_seen, legacy_unseen)}
    lookups: list[str] = []

    def note(_conn: object, _cursor: object, statement: str, parameters: object, *_args: object) -> None:
        if "FROM api_token" in statement:
            values = parameters.values() if isinstance(parameters, dict) else parameters
            lookups.extend(str(v) for v in values or () if isinstance(v, str))  # type: ignore[union-attr]

    def get(http: httpx.Client, token: str) -> httpx.Response:
        return http.get("/api/v1/devices", headers={"Authorization": f"Bearer {token}"})

    deadline = time.monotonic() + DEADLINE_S
    event.listen(service.engine, "before_cursor_execute", note)
    try:
        with httpx.Client(base_url=service.api_url, timeout=20) as http:
            assert get(http, legacy_seen).status_code == 200  # an old token: looked up within the budget, admitted
            # the flooder spends what is left of the address's budget with old-shape made-up ids
            old_shape = [get(http, made_up()).status_code for _ in range(BURST + 5)]
            assert old_shape.count(429) >= 5

            def flood(_: int) -> list[int]:
                with httpx.Client(base_url=service.api_url or "", timeout=20) as own:
                    return [get(own, made_up_tagged()).status_code for _ in range(REQUESTS_EACH)
                            if time.monotonic() < deadline]  # fmt: skip

            with ThreadPoolExecutor(FLOODERS) as pool:
                flooders = [pool.submit(flood, i) for i in range(FLOODERS)]
                first = get(http, operator)  # its first request to this process, mid-flood
                operator_codes = [first.status_code] + [get(http, operator).status_code for _ in range(5)]
                tagged_codes = [code for f in flooders for code in f.result(DEADLINE_S)]
            wrong_secret = get(http, operator.rsplit("_", 1)[0] + "_" + secrets.token_urlsafe(32))
            legacy_codes = [get(http, legacy_seen).status_code, get(http, legacy_unseen).status_code]
            after_flood = get(http, made_up())
    finally:
        event.remove(service.engine, "before_cursor_execute", note)

    assert operator_codes == [200] * 6, first.text  # never a 429, though the address's budget is spent
    assert len(tagged_codes) == FLOODERS * REQUESTS_EACH and set(tagged_codes) == {401}
    made_up_lookups = [v for v in lookups if v not in known_ids]
    assert len(made_up_lookups) <= BURST  # only old-shape ids, within the budget: the tagged ones cost none
    assert wrong_secret.status_code == 401  # a right tag admits the lookup, not the token
    assert legacy_codes == [200, 429]  # old tokens: the admitted one served, an unseen one budgeted as before
    assert after_flood.status_code == 429 and after_flood.headers.get("retry-after")
    with httpx.Client(base_url=service.api_url, timeout=20) as browser:  # the console signs the operator in too
        signin = browser.post("/console/signin", data={"token": operator, "next": "/console"},
                              headers={"Origin": service.api_url})  # fmt: skip
        assert signin.status_code == 303, signin.text
        assert browser.get("/console").status_code == 200
