"""Enrollment over the console API: tokens (admin only, secrets shown once), the one public route where a
device spends a token, refusals that all look alike, revocation, and the audit trail of each."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlmodel import Session, select

from cloud.db.tables import Device
from cloud.identity.enrollment import is_enrolled
from cloud.identity.passwords import verify_password
from cloud.identity.records import AuditEntry, DeviceCredential, EnrollmentToken
from cloud.registry.keys import CHAIN_FILE
from edge_agent.transport import MemoryBroker
from protocols.topics import Channel, device_topic
from protocols.v1 import messages_pb2 as pb

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

TokenFor = Callable[[str], str]
DEVICE_MQTT_URL = "mqtts://broker.test:8883"  # as the app fixture (conftest) configures it


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_token(client: TestClient, **body: object) -> dict:
    response = client.post("/api/v1/enrollment-tokens", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def audit_log(engine: Engine) -> list[AuditEntry]:
    with Session(engine) as session:
        return list(session.exec(select(AuditEntry).order_by(AuditEntry.id)))  # type: ignore[arg-type]


def test_only_admins_create_and_list_tokens(anonymous: TestClient, token_for: TokenFor) -> None:
    body = {"labels": {"site": "lab"}}
    assert anonymous.post("/api/v1/enrollment-tokens", json=body).status_code == 401
    for role in ("viewer", "deployer"):
        headers = bearer(token_for(role))
        assert anonymous.post("/api/v1/enrollment-tokens", json=body, headers=headers).status_code == 403
        assert anonymous.get("/api/v1/enrollment-tokens", headers=headers).status_code == 403
        assert anonymous.post("/api/v1/devices/pi-01/revoke", headers=headers).status_code == 403
    created = anonymous.post("/api/v1/enrollment-tokens", json=body, headers=bearer(token_for("admin")))
    assert created.status_code == 201 and created.json()["token"].startswith("efe_")


def test_the_secret_is_shown_once_and_never_listed(client: TestClient, engine: Engine) -> None:
    created = new_token(client, device_id="pi-01", labels={"site": "lab"}, ttl_s=3600)
    secret = created["token"].split("_", 2)[2]
    assert created["device_id"] == "pi-01" and created["labels"] == {"site": "lab"} and created["used_at_ms"] is None
    listing = client.get("/api/v1/enrollment-tokens")
    assert [t["id"] for t in listing.json()] == [created["id"]]
    assert secret not in listing.text and "token" not in listing.json()[0] and "secret" not in listing.text
    [entry] = audit_log(engine)
    assert (entry.action, entry.target, entry.role) == ("enrollment_token.create", created["id"], "admin")
    assert secret not in json.dumps(entry.detail) and entry.detail["labels"] == {"site": "lab"}
    for bad in ({"ttl_s": 5}, {"ttl_s": 10**9}, {"device_id": "no/slash"}, {"labels": {"k": "a b"}}):
        assert client.post("/api/v1/enrollment-tokens", json=bad).status_code == 422, bad


def test_a_device_enrolls_without_an_operator_token(
    client: TestClient, anonymous: TestClient, engine: Engine, keys_dir: Path
) -> None:
    created = new_token(client, labels={"site": "lab"})
    response = anonymous.post("/api/v1/enroll", json={"token": created["token"], "device_id": "pi-01"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["device_id"], answer["username"], answer["labels"]) == ("pi-01", "pi-01", {"site": "lab"})
    assert answer["mqtt_url"] == DEVICE_MQTT_URL and answer["fleet"] == "default" and answer["tls_ca"] is None
    assert base64.b64decode(answer["trust_chain"]) == (keys_dir / CHAIN_FILE).read_bytes()
    with Session(engine) as session:
        credential = session.get(DeviceCredential, "pi-01")
        assert credential is not None and verify_password(answer["password"], credential.password_hash)
        device = session.get(Device, "pi-01")
        assert device is not None and device.labels == {"site": "lab"}  # the row came with the enrollment
        token = session.get(EnrollmentToken, created["id"])
        assert token is not None and token.used_by == "pi-01"
    listed = client.get("/api/v1/enrollment-tokens").json()[0]
    assert listed["used_by"] == "pi-01" and listed["used_at_ms"] is not None
    entries = [(e.actor, e.action, e.target) for e in audit_log(engine)]
    assert entries[-1] == ("device pi-01", "device.enroll", "pi-01")
    assert all(answer["password"] not in json.dumps(e.detail) for e in audit_log(engine))


def test_every_refusal_is_the_same_403_and_is_audited(
    client: TestClient, anonymous: TestClient, engine: Engine
) -> None:
    used = new_token(client)["token"]
    assert anonymous.post("/api/v1/enroll", json={"token": used, "device_id": "pi-01"}).status_code == 200
    scoped = new_token(client, device_id="pi-07")["token"]
    expiring = new_token(client)
    with Session(engine) as session:
        row = session.get(EnrollmentToken, expiring["id"])
        assert row is not None
        row.expires_at_ms = 1
        session.add(row)
        session.commit()
    attempts = [
        (used, "pi-02"), (scoped, "pi-08"), (expiring["token"], "pi-03"), (scoped[:-1] + "x", "pi-07"),
        ("efe_000000000000_" + "A" * 43, "pi-04"), ("garbage", "pi-05"), ("", "pi-06"),
    ]  # fmt: skip
    bodies = set()
    for token, device_id in attempts:
        response = anonymous.post("/api/v1/enroll", json={"token": token, "device_id": device_id})
        assert response.status_code == 403, (token, response.text)
        bodies.add(response.text)
    assert len(bodies) == 1 and "enrollment_refused" in bodies.pop()
    refusals = [e for e in audit_log(engine) if e.action == "device.enroll_refused"]
    assert [e.target for e in refusals] == [d for _, d in attempts]
    assert {e.detail["reason"] for e in refusals} >= {"already used", "expired", "wrong secret", "unknown token"}
    everything = json.dumps([e.detail for e in audit_log(engine)])
    assert scoped.split("_", 2)[2] not in everything and used.split("_", 2)[2] not in everything
    with Session(engine) as session:
        assert not any(is_enrolled(session, d) for d in ("pi-02", "pi-03", "pi-04", "pi-05", "pi-07", "pi-08"))
        assert session.get(Device, "pi-08") is None


def test_a_bad_device_id_is_refused_before_the_token_is_spent(client: TestClient, anonymous: TestClient) -> None:
    token = new_token(client)["token"]
    assert anonymous.post("/api/v1/enroll", json={"token": token, "device_id": "bad/id"}).status_code == 422
    assert anonymous.post("/api/v1/enroll", json={"token": token, "device_id": "good"}).status_code == 200


def test_a_newly_enrolled_device_joins_the_label_deployment_it_matches(
    client: TestClient, anonymous: TestClient, broker: MemoryBroker, engine: Engine, register
) -> None:
    with Session(engine) as session:
        register(session, "m")
    body = {"model_id": "m", "labels": {"site": "lab"}, "wait_for_devices": True}
    deployment = client.post("/api/v1/deployments", json=body).json()
    assert deployment["targets"] == []
    token = new_token(client, labels={"site": "lab"})["token"]
    assert anonymous.post("/api/v1/enroll", json={"token": token, "device_id": "pi-01"}).status_code == 200
    [(_topic, payload)] = broker.retained_for(device_topic("pi-01", Channel.DESIRED))
    assert pb.DesiredState.FromString(payload).deployment_id == deployment["id"]


def test_revoking_a_device_withdraws_its_credentials(client: TestClient, anonymous: TestClient, engine: Engine) -> None:
    token = new_token(client)["token"]
    assert anonymous.post("/api/v1/enroll", json={"token": token, "device_id": "pi-01"}).status_code == 200
    with Session(engine) as session:
        row = session.get(Device, "pi-01")
        assert row is not None
        row.online = True  # it connected and said so
        session.add(row)
        session.commit()
    assert client.post("/api/v1/devices/pi-01/revoke").json() == {"device_id": "pi-01", "revoked": True}
    assert client.get("/api/v1/devices/pi-01").json()["online"] is False  # dropped without a will: say so
    assert client.post("/api/v1/devices/pi-01/revoke").json() == {"device_id": "pi-01", "revoked": False}
    assert client.post("/api/v1/devices/ghost/revoke").status_code == 404
    with Session(engine) as session:
        assert not is_enrolled(session, "pi-01")
    revokes = [e for e in audit_log(engine) if e.action == "device.revoke"]
    assert [(e.target, e.detail) for e in revokes] == [
        ("pi-01", {"had_live_credentials": True}), ("pi-01", {"had_live_credentials": False})
    ]
