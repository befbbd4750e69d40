"""BrokerAuthority, the embedded broker's decisions, on a real database: who may connect, with which
client id and will, what each user may touch, and which connected devices lost their credentials."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from cloud.identity.acl import CLOUD_USER, Access, cloud_grants, device_grants, grants_for
from cloud.identity.enrollment import enroll_device, revoke_device
from cloud.mqtt.broker_auth import CLOUD_PASSWORD_FILE, BrokerAuthority, cloud_password
from protocols.topics import Channel, device_topic, trust_topic

FLEET = "lab"


@pytest.fixture
def enrolled(engine: Engine) -> tuple[BrokerAuthority, dict[str, str]]:
    with Session(engine) as session:
        passwords = {d: enroll_device(session, d).password for d in ("pi-01", "pi-02")}
        session.commit()
    return BrokerAuthority(engine, FLEET, "cloud-secret"), passwords


def test_grants_for_splits_cloud_devices_and_anonymous() -> None:
    assert list(grants_for(CLOUD_USER, FLEET)) == cloud_grants(FLEET)
    assert list(grants_for("pi-01", FLEET)) == device_grants(FLEET)
    assert list(grants_for(None, FLEET)) == [] and list(grants_for("", FLEET)) == []


def test_connect_needs_live_credentials_and_the_device_id_as_client_id(
    enrolled: tuple[BrokerAuthority, dict[str, str]], engine: Engine
) -> None:
    authority, pw = enrolled
    assert authority.check_connect("pi-01", pw["pi-01"], "pi-01")
    assert authority.check_connect(CLOUD_USER, "cloud-secret", "any-worker-id")
    refused = [
        (None, None, "pi-01"), ("pi-01", None, "pi-01"), ("pi-01", "", "pi-01"), ("pi-01", "wrong", "pi-01"),
        ("pi-01", pw["pi-02"], "pi-01"), ("pi-01", pw["pi-01"], "pi-02"), ("pi-01", pw["pi-01"], ""),
        ("pi-03", pw["pi-01"], "pi-03"), (CLOUD_USER, pw["pi-01"], "x"), ("pi-01", "x" * 100_000, "pi-01"),
        ("pi-01", "\x00\udcff", "pi-01"),
    ]  # fmt: skip
    for user, password, client_id in refused:
        assert not authority.check_connect(user, password, client_id), (user, client_id)
    with Session(engine) as session:
        revoke_device(session, "pi-01")
        session.commit()
    assert not authority.check_connect("pi-01", pw["pi-01"], "pi-01")


def test_a_will_must_go_where_the_user_may_write(enrolled: tuple[BrokerAuthority, dict[str, str]]) -> None:
    authority, pw = enrolled
    own = device_topic("pi-01", Channel.PRESENCE, fleet=FLEET)
    assert authority.check_connect("pi-01", pw["pi-01"], "pi-01", will_topic=own)
    for topic in (device_topic("pi-02", Channel.PRESENCE, fleet=FLEET), trust_topic(FLEET), "#", "elsewhere"):
        assert not authority.check_connect("pi-01", pw["pi-01"], "pi-01", will_topic=topic), topic


def test_topic_access_is_the_mosquitto_acl(enrolled: tuple[BrokerAuthority, dict[str, str]]) -> None:
    authority, _ = enrolled
    own_up, other_up = (device_topic(d, Channel.TELEMETRY, fleet=FLEET) for d in ("pi-01", "pi-02"))
    own_down = device_topic("pi-01", Channel.DESIRED, fleet=FLEET)
    assert authority.may("pi-01", Access.WRITE, own_up) and authority.may("pi-01", Access.READ, own_down)
    assert not authority.may("pi-01", Access.WRITE, other_up)
    assert not authority.may("pi-01", Access.WRITE, own_down)  # downward is the cloud's
    assert not authority.may("pi-01", Access.READ, f"ef/v1/{FLEET}/dev/+/desired")
    assert not authority.may(None, Access.READ, own_down) and not authority.may("", Access.READ, own_down)
    assert authority.may(CLOUD_USER, Access.WRITE, own_down)
    assert authority.may(CLOUD_USER, Access.READ, f"ef/v1/{FLEET}/#")
    assert not authority.may(CLOUD_USER, Access.READ, "ef/v1/other/#")


def test_revoked_among_names_the_connected_devices_without_live_credentials(
    enrolled: tuple[BrokerAuthority, dict[str, str]], engine: Engine
) -> None:
    authority, _ = enrolled
    assert authority.revoked_among({"pi-01", "pi-02", CLOUD_USER}) == set()
    with Session(engine) as session:
        revoke_device(session, "pi-02")
        session.commit()
    assert authority.revoked_among({"pi-01", "pi-02", "ghost", CLOUD_USER}) == {"pi-02", "ghost"}


def test_the_cloud_password_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = cloud_password(tmp_path / "data")
    assert len(first) >= 40 and cloud_password(tmp_path / "data") == first
    mode = os.stat(tmp_path / "data" / CLOUD_PASSWORD_FILE).st_mode
    assert stat.S_IMODE(mode) == 0o600
