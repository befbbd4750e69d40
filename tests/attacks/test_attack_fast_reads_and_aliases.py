"""Attack on the console API's surfaces added with the fast lane and retraining: an operator token (viewer
or deployer, revoked or forged) against the fast lane's cached GETs (cloud/api/fast_reads.py) and the
registry aliases and retraining routes (cloud/api/routes/retraining.py). A real CloudService on uvicorn
(PostgreSQL when EDGEFLEET_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from cloud.identity.tokens import Role, create_token
from cloud.service import CloudService
from cloud.settings import CloudSettings
from protocols.v1 import messages_pb2 as pb

pytestmark = pytest.mark.integration


@pytest.fixture
def service(tmp_path: Path, database_url: str) -> Iterator[CloudService]:
    with CloudService(CloudSettings(data_dir=tmp_path / "cloud", database_url=database_url, api_port=0)) as running:
        yield running


def _token(service: CloudService, role: Role) -> tuple[str, str]:
    assert service.engine is not None
    with Session(service.engine) as session:
        row, text = create_token(session, name=f"attack {role.value}", role=role, created_by="test")
        session.commit()
        return row.id, text


def _get(service: CloudService, path: str, *headers: tuple[str, str]) -> httpx.Response:
    return httpx.get(f"{service.api_url}{path}", headers=list(headers), timeout=30)


def _bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


def test_the_fast_lane_refuses_what_the_full_app_refuses(service: CloudService) -> None:
    viewer_id, viewer = _token(service, Role.VIEWER)
    _, admin = _token(service, Role.ADMIN)
    routes = service._server.config.app.state.read_routes  # the lane's memory (tests read `served`)
    path = "/api/v1/devices"
    # the first answer is the full app's, the next ones (within the cache's age) the lane's; on a loaded
    # machine three GETs can outlast that age, so ask until the lane has served once (bounded)
    for _ in range(30):
        assert _get(service, path, _bearer(viewer)).status_code == 200
        if routes.served >= 1:
            break
    assert routes.served >= 1
    served = routes.served
    forged_secret = viewer.rsplit("_", 1)[0] + "_" + "A" * 43
    refused = {
        "no token": _get(service, path),
        "the right id, a forged secret": _get(service, path, _bearer(forged_secret)),
        "another scheme": _get(service, path, ("Authorization", f"Basic {viewer}")),
        "a forged token first, the real one second": _get(service, path, _bearer(forged_secret), _bearer(viewer)),
        "a made-up id": _get(service, path, _bearer("ef_" + "z" * 32 + "_secret")),
        "an id over 32 characters": _get(service, path, _bearer("ef_" + "z" * 5000 + "_secret")),
    }
    assert {k: r.status_code for k, r in refused.items()} == dict.fromkeys(refused, 401)
    revoked = httpx.delete(f"{service.api_url}/api/v1/tokens/{viewer_id}", headers=[_bearer(admin)], timeout=30)
    assert revoked.status_code == 200
    assert _get(service, path, _bearer(viewer)).status_code == 401  # at once, not after the cache's 2 s
    assert routes.served == served  # none of these took the lane
    # query-string variants are other routes for the lane: each goes through the full app first
    assert _get(service, path + "?online=true", _bearer(admin)).status_code == 200
    assert _get(service, path + "?online=true&online=false", _bearer(admin)).status_code in (200, 422)
    assert _get(service, path + "?online=%00", _bearer(admin)).status_code == 422


def _model(service: CloudService, versions: int) -> list[str]:
    out = []
    for i in range(versions):
        data = b"model-bytes-%d" % i * 100
        manifest = pb.Manifest(model_id="m")
        manifest.artifacts.add(name="model.onnx", format=pb.ARTIFACT_FORMAT_ONNX, runtime="onnxruntime",
                               sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))  # fmt: skip
        out.append(service.register_model_version(manifest, {"model.onnx": data}).version)
    return out


def _post(service: CloudService, path: str, token: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{service.api_url}{path}", headers=[_bearer(token)], timeout=30, **kwargs)


def test_alias_moves_refuse_bad_input_and_race_cleanly(service: CloudService) -> None:
    v1, v2 = _model(service, 2)
    _, viewer = _token(service, Role.VIEWER)
    _, deployer = _token(service, Role.DEPLOYER)
    move = {"version": v1, "reason": "attack"}
    assert _post(service, "/api/v1/models/m/aliases/champion", viewer, json=move).status_code == 403
    assert _post(service, "/api/v1/models/m/retrain", viewer, json={}).status_code == 403
    bad = {
        "unknown alias": ("/api/v1/models/m/aliases/owner", move, 422),
        "a 20k-character alias": ("/api/v1/models/m/aliases/" + "a" * 20_000, move, 422),
        "a NUL in the version": ("/api/v1/models/m/aliases/champion", {"version": "1\x00", "reason": "x"}, 422),
        "a NUL in a retrain's reason": ("/api/v1/models/m/retrain", {"reason": "a\x00b"}, 422),
        "an unknown model": ("/api/v1/models/nope/aliases/champion", move, 404),
        "an unknown version": ("/api/v1/models/m/aliases/champion", {"version": "999", "reason": "x"}, 404),
        "a version over 64 characters": ("/api/v1/models/m/aliases/champion", {"version": "1" * 65, "reason": "x"},
                                         422),
        "a NUL in the reason": ("/api/v1/models/m/aliases/champion", {"version": v1, "reason": "a\x00b"}, 422),
        "a NUL in the alias": ("/api/v1/models/m/aliases/champ%00ion", move, 422),
        "a 1 MB reason": ("/api/v1/models/m/aliases/champion", {"version": v1, "reason": "r" * 1_000_000}, 422),
        "no reason": ("/api/v1/models/m/aliases/champion", {"version": v1}, 422),
        "a retrain with a NaN margin": ("/api/v1/models/m/retrain", {"margin": "NaN"}, 422),
        "a retrain with a huge min_field_rows": ("/api/v1/models/m/retrain", {"min_field_rows": 10**30}, 422),
    }  # fmt: skip
    got = {name: _post(service, path, deployer, json=body).status_code for name, (path, body, _) in bad.items()}
    assert got == {name: status for name, (_, _, status) in bad.items()}

    # sixteen deployers move the same, never-set alias at once, to two versions: none may fail with a 500
    def race(i: int) -> int:
        body = {"version": (v1, v2)[i % 2], "reason": f"race {i}"}
        return _post(service, "/api/v1/models/m/aliases/production", deployer, json=body).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(race, range(16)))
    assert set(codes) <= {200, 409} and 200 in codes, codes
    view = httpx.get(f"{service.api_url}/api/v1/models/m/aliases", headers=[_bearer(viewer)], timeout=30).json()
    moves = [m for m in view["history"] if m["alias"] == "production"]
    assert view["current"]["production"] == moves[-1]["to_version"]
    assert [m["from_version"] for m in moves[1:]] == [m["to_version"] for m in moves[:-1]]  # an unbroken chain
