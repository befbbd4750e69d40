"""Lists that grow with the fleet: gzip when the client accepts it (a cached answer compressed once, also
from the fast lane), and keyset pages behind `Link: <...>; rel="next"` that hold every device exactly once
while devices are added (cloud.api.compression, cloud.api.paging)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient  # conftest imported it first, quieting its httpx warning
from sqlalchemy import Engine
from sqlmodel import Session
from support.enrollment import enroll

from cloud.api import compression
from cloud.api.paging import encode_cursor, link_next_url
from cloud.db import session_scope
from cloud.db.tables import Device, EventRecord
from cloud.identity.tokens import Role

TokenFor = Callable[[str], str]
MAX_PAGES = 50  # every paging loop below is bounded


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add_devices(engine: Engine, ids: list[str]) -> None:
    with session_scope(engine) as session:
        for device_id in ids:
            session.add(Device(id=device_id, labels={"site": "lab", "note": "x" * 40}))


def raw_get(client: TestClient, path: str, encoding: str) -> tuple[bytes, Any]:
    """The bytes on the wire (not decoded by httpx) and the headers."""
    with client.stream("GET", path, headers={"Accept-Encoding": encoding}) as response:
        assert response.status_code == 200, response.read()
        return b"".join(response.iter_raw()), response.headers


def test_a_big_list_is_gzipped_when_accepted_and_the_same_json(
    app: FastAPI, engine: Engine, token_for: TokenFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_devices(engine, [f"pi-{i:03d}" for i in range(60)])
    compressions = []
    real_compress = gzip.compress
    monkeypatch.setattr(compression.gzip, "compress", lambda *a, **k: compressions.append(1) or real_compress(*a, **k))
    with TestClient(app, headers=bearer(token_for(Role.VIEWER))) as client:
        plain, plain_headers = raw_get(client, "/api/v1/devices", "identity")
        assert "content-encoding" not in plain_headers and len(json.loads(plain)) == 60
        zipped = []
        for _ in range(5):  # the first from the full app, the next ones from the fast lane
            body, headers = raw_get(client, "/api/v1/devices", "br;q=1.0, gzip;q=0.8")
            assert headers["content-encoding"] == "gzip" and "Accept-Encoding" in headers["vary"]
            assert int(headers["content-length"]) == len(body)
            zipped.append(body)
        assert app.state.read_routes.served >= 4
        assert all(gzip.decompress(z) == plain for z in zipped)
        assert len(zipped[0]) * 4 < len(plain)  # JSON of many alike rows
        assert len(compressions) == 1  # compressed once when cached, not once a request
        refused, headers = raw_get(client, "/api/v1/devices", "gzip;q=0, identity")
        assert refused == plain and "content-encoding" not in headers  # q=0 means "not gzip"
        # an answer of the full app that is not cached (the OpenAPI document) is gzipped too
        assert client.get("/openapi.json").headers.get("content-encoding") == "gzip"
        small, headers = raw_get(client, "/api/v1/models", "gzip")  # "[]": not worth it
        assert small == b"[]" and "content-encoding" not in headers


def follow(client: TestClient, url: str, between: Callable[[int], None] = lambda _: None) -> list[list[str]]:
    pages = []
    next_url: str | None = url
    while next_url is not None and len(pages) < MAX_PAGES:
        response = client.get(next_url)
        assert response.status_code == 200, response.text
        pages.append([row["id"] if "id" in row else row["seq"] for row in response.json()])
        next_url = response.links.get("next", {}).get("url")
        between(len(pages))
    assert next_url is None, "paging did not end"
    return pages


def test_paging_holds_every_device_once_while_devices_are_added(client: TestClient, engine: Engine) -> None:
    first = [f"pi-{i:03d}" for i in range(0, 50, 2)]  # 25 devices: pi-000, pi-002, ...
    add_devices(engine, first)
    added: list[str] = []

    def enroll_more(page: int) -> None:  # between pages: one device behind the cursor, one ahead of it
        more = [f"pi-{2 * page - 1:03d}", f"pi-{2 * (page + 10) + 1:03d}"]
        add_devices(engine, more)
        added.extend(more)

    pages = follow(client, "/api/v1/devices?limit=7&label=site=lab", enroll_more)
    assert all(len(page) <= 7 for page in pages) and len(pages) >= 4
    seen = [device for page in pages for device in page]
    assert len(seen) == len(set(seen))  # nobody twice
    assert set(first) <= set(seen)  # everyone there at the start, once
    assert seen == sorted(seen)  # in id order, each page after the last
    assert set(seen) - set(first) <= set(added)


def test_a_page_without_more_has_no_link_and_the_default_is_one_page(client: TestClient, engine: Engine) -> None:
    add_devices(engine, ["pi-a", "pi-b"])
    answer = client.get("/api/v1/devices")
    assert [d["id"] for d in answer.json()] == ["pi-a", "pi-b"] and "link" not in answer.headers
    answer = client.get("/api/v1/devices", params={"limit": 1})
    assert [d["id"] for d in answer.json()] == ["pi-a"]
    assert answer.links["next"]["url"].startswith("/api/v1/devices?limit=1&cursor=")
    assert link_next_url(answer.headers["link"]) == answer.links["next"]["url"]  # what the CLI follows


@pytest.mark.parametrize("cursor", ["not-a-cursor", "%%%", encode_cursor("events", 5), encode_cursor("devices", 5)])
def test_a_cursor_that_is_not_a_devices_cursor_is_a_422(client: TestClient, cursor: str) -> None:
    answer = client.get("/api/v1/devices", params={"cursor": cursor})
    assert answer.status_code == 422 and answer.json()["error"] == "invalid_request"
    assert client.get("/api/v1/devices", params={"limit": 0}).status_code == 422
    assert client.get("/api/v1/devices", params={"limit": 100_000}).status_code == 422


def test_a_devices_events_page_newest_first(client: TestClient, engine: Engine) -> None:
    add_devices(engine, ["pi-01"])
    with session_scope(engine) as session:
        for seq in range(1, 31):
            session.add(EventRecord(device_id="pi-01", seq=seq, ts_ms=seq, kind="heartbeat"))
    pages = follow(client, "/api/v1/devices/pi-01/events?limit=8")
    assert [len(p) for p in pages] == [8, 8, 8, 6]
    assert [seq for page in pages for seq in page] == list(range(30, 0, -1))


def test_a_deployments_targets_page_by_device(client: TestClient, engine: Engine, register: Any) -> None:
    with Session(engine) as session:
        register(session, "m")
    ids = [f"dev-{i:02d}" for i in range(12)]
    enroll(engine, *ids)
    created = client.post("/api/v1/deployments", json={"model_id": "m", "device_ids": ids})
    assert created.status_code == 201, created.text
    deployment = created.json()["id"]
    pages = []
    next_url: str | None = f"/api/v1/deployments/{deployment}/targets?limit=5"
    while next_url is not None and len(pages) < MAX_PAGES:
        answer = client.get(next_url)
        assert answer.status_code == 200, answer.text
        pages.append([t["device_id"] for t in answer.json()])
        next_url = answer.links.get("next", {}).get("url")
    assert pages == [ids[:5], ids[5:10], ids[10:]]
    assert client.get("/api/v1/deployments/nope/targets").status_code == 404


def test_a_deployments_detail_counts_every_target_and_carries_only_a_first_page(
    client: TestClient, engine: Engine, register: Any
) -> None:
    """GET /deployments/{id} listed every target (10,000 devices: megabytes a poll): now counts per status,
    the first 100 targets and the URL of the rest in the paged list; `target_limit` 0..2000 picks the page."""
    with Session(engine) as session:
        register(session, "m")
    ids = [f"dev-{i:03d}" for i in range(130)]
    enroll(engine, *ids)
    created = client.post("/api/v1/deployments", json={"model_id": "m", "device_ids": ids})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["target_count"] == 130 and body["counts"] == {"pending": 130}
    assert [t["device_id"] for t in body["targets"]] == ids[:100]
    detail = client.get(f"/api/v1/deployments/{body['id']}").json()
    assert [t["device_id"] for t in detail["targets"]] == ids[:100] and detail["target_count"] == 130
    rest = client.get(detail["targets_next"])  # the paged list, from the device after the first page
    assert [t["device_id"] for t in rest.json()] == ids[100:] and "link" not in rest.headers
    assert detail["waiting"] == ("waiting for 130 device(s): 130 offline (dev-000, dev-001, dev-002, dev-003, "
                                 "dev-004 and 125 more): their desired state waits for them, retained")  # fmt: skip
    none = client.get(f"/api/v1/deployments/{body['id']}", params={"target_limit": 0}).json()
    assert none["targets"] == [] and none["targets_next"] == f"/api/v1/deployments/{body['id']}/targets"
    every = client.get(f"/api/v1/deployments/{body['id']}", params={"target_limit": 200}).json()
    assert len(every["targets"]) == 130 and every["targets_next"] is None
    for bad in (-1, 2001, "all"):
        assert client.get(f"/api/v1/deployments/{body['id']}", params={"target_limit": bad}).status_code == 422
