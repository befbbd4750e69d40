"""The embedded broker's authentication beyond the shared attack cases (tests/attacks/
test_attack_broker_identities.py): the amqtt CONNECT-order defect it patches, its periodic recheck of
connected devices, and the cloud service wiring it (its own broker user, the revoke API, the setting)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from amqtt.broker import Broker
from sqlmodel import Session
from support import wait_until
from support.enrollment import enroll
from support.secured_brokers import FLEET, SecuredBroker, start_embedded

from cloud.cli.operator_token import ensure_dev_token
from cloud.identity.acl import CLOUD_USER
from cloud.identity.enrollment import revoke_device
from cloud.mqtt.amqtt_fixes import EdgeFleetAmqttBroker
from cloud.mqtt.broker_auth import CLOUD_PASSWORD_FILE
from cloud.service import CloudService
from cloud.settings import CloudSettings
from protocols.topics import Channel, device_topic

pytestmark = pytest.mark.integration


class AmqttConnectOrder(EdgeFleetAmqttBroker):
    """Our broker with amqtt's own CONNECT handling put back: sessions touched before authentication."""

    _initialize_client_session = Broker._initialize_client_session
    _authenticate = Broker._authenticate


def _session_survives_a_refused_connect(sb: SecuredBroker, make_transport: Callable[..., Any]) -> bool:
    desired = device_topic("pi-01", Channel.DESIRED, fleet=FLEET)
    cloud, _ = make_transport(broker=sb, client_id="cloud-x", username=CLOUD_USER, password=sb.cloud_password)
    one, inbox = make_transport(desired, broker=sb, client_id="pi-01", username="pi-01",
                                password=sb.passwords["pi-01"], clean_start=False, connect=False)  # fmt: skip
    connects: list[int] = []
    one.set_connect_handler(lambda: connects.append(1))
    one.start()
    assert wait_until(lambda: connects, 10)
    intruder, _ = make_transport(broker=sb, client_id="pi-01", username="pi-01", password="wrong", connect=False)
    intruder.start()
    assert wait_until(lambda: intruder.last_error, 10) and not intruder.connected
    intruder.stop()
    cloud.publish(desired, b"still yours")
    received = inbox.wait_for(1, timeout_s=2)
    return received and len(connects) == 1  # (a device knocked off reconnects and subscribes again)


@pytest.mark.parametrize("broker_class", [AmqttConnectOrder, EdgeFleetAmqttBroker])
def test_a_refused_connect_leaves_the_named_session_alone_only_with_the_patch(
    broker_class: type[Broker], tmp_path: Path, database_url: str, make_transport: Callable[..., Any]
) -> None:
    sb = start_embedded(tmp_path, database_url, broker_class=broker_class)
    try:
        survived = _session_survives_a_refused_connect(sb, make_transport)
    finally:
        sb.stop()
    assert survived is (broker_class is EdgeFleetAmqttBroker)  # amqtt's order lets the intruder wipe it


def test_the_periodic_recheck_drops_a_revoked_device(
    tmp_path: Path, database_url: str, make_transport: Callable[..., Any]
) -> None:
    sb = start_embedded(tmp_path, database_url, recheck_s=0.3)
    try:
        two, _ = make_transport(broker=sb, client_id="pi-02", username="pi-02", password=sb.passwords["pi-02"])
        one, _ = make_transport(broker=sb, client_id="pi-01", username="pi-01", password=sb.passwords["pi-01"])
        assert sb.engine is not None
        with Session(sb.engine) as session:
            revoke_device(session, "pi-02")
            session.commit()
        assert wait_until(lambda: not two.connected, 5)
        assert one.connected
    finally:
        sb.stop()


@pytest.fixture
def cloud(tmp_path: Path, database_url: str) -> Iterator[CloudService]:
    settings = CloudSettings(data_dir=tmp_path / "cloud", database_url=database_url, api_port=0)
    with CloudService(settings) as service:
        assert service.transport.wait_connected(10)
        yield service


def test_the_cloud_has_its_own_broker_user_and_anonymous_clients_are_refused(
    cloud: CloudService, make_transport: Callable[..., Any]
) -> None:
    password_file = cloud.settings.data_dir / CLOUD_PASSWORD_FILE
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert cloud.transport.connected  # as CLOUD_USER with that file's password
    anonymous, _ = make_transport(broker=cloud.broker, connect=False)
    anonymous.start()
    assert wait_until(lambda: anonymous.last_error, 10) and not anonymous.connected
    passwords = enroll(cloud, "pi-01")
    make_transport(broker=cloud.broker, client_id="pi-01", username="pi-01", password=passwords["pi-01"])


def test_the_revoke_api_drops_a_connected_device_at_once(
    cloud: CloudService, make_transport: Callable[..., Any]
) -> None:
    passwords = enroll(cloud, "pi-01")
    device, _ = make_transport(broker=cloud.broker, client_id="pi-01", username="pi-01", password=passwords["pi-01"])
    assert cloud.engine is not None
    token = ensure_dev_token(cloud.engine, cloud.settings.data_dir)
    assert token is not None
    headers = {"Authorization": f"Bearer {token[0].read_text().strip()}"}
    answer = httpx.post(f"{cloud.api_url}/api/v1/devices/pi-01/revoke", headers=headers, timeout=10)
    assert answer.status_code == 200 and answer.json()["revoked"] is True
    assert wait_until(lambda: not device.connected, 5)  # the periodic recheck is 30 s away


def test_auth_off_lets_anyone_in(tmp_path: Path, database_url: str, make_transport: Callable[..., Any]) -> None:
    settings = CloudSettings(data_dir=tmp_path / "cloud", database_url=database_url, api_port=0,
                             embedded_broker_auth=False)  # fmt: skip
    with CloudService(settings) as service:
        assert service.transport.wait_connected(10)
        make_transport(broker=service.broker)  # anonymous
        assert not (settings.data_dir / CLOUD_PASSWORD_FILE).exists()
