"""Attacks with broker access, against a real Mosquitto run with exactly what `edgefleet broker-config`
writes: anonymous clients, wrong passwords, one device posing as or spying on another, a device writing
the cloud's downward topics, wildcard subscriptions, another fleet's subtree, a revoked device."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import MosquittoBroker, free_port, mosquitto_binary, wait_until

from cloud.identity.broker_config import CLOUD_USER, BrokerConfig
from cloud.identity.passwords import hash_password
from protocols.topics import Channel, cloud_subscriptions, device_topic, trust_topic

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(mosquitto_binary() is None, reason="needs the mosquitto binary"),
]

FLEET = "lab"
PASSWORDS = {"pi-01": "pw-one-" + "x" * 30, "pi-02": "pw-two-" + "y" * 30}


class ConfiguredMosquitto(MosquittoBroker):
    """Mosquitto started with a config folder written by BrokerConfig (plus test-only logging)."""

    def __init__(self, config: BrokerConfig) -> None:
        super().__init__(config.directory / "run", port=config.tls_port)
        self.config = config

    @property
    def url(self) -> str:
        return f"mqtts://localhost:{self.port}"

    def _write_config(self) -> None:
        lines = [self.config.conf_path.read_text(), "log_dest stderr", "log_type all"]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to 'mosquitto', who cannot read the temp dir
        self.config_path.write_text("\n".join(lines) + "\n")

    def reload(self) -> None:
        import signal

        assert self._proc is not None
        self._proc.send_signal(signal.SIGHUP)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[ConfiguredMosquitto, str]]:
    config = BrokerConfig(tmp_path / "broker", FLEET, ("localhost", "127.0.0.1"), tls_port=free_port())
    cloud_password = config.write({d: hash_password(pw) for d, pw in PASSWORDS.items()})
    assert cloud_password is not None
    broker = ConfiguredMosquitto(config).start()
    yield broker, cloud_password
    broker.stop()


def _client(make_transport: Any, broker: ConfiguredMosquitto, user: str | None, password: str | None,
            *subs: str, connect: bool = True) -> Any:  # fmt: skip
    return make_transport(
        *subs, broker=broker, client_id=user, username=user, password=password, connect=connect,
        tls_ca=str(broker.config.directory / "ca.crt"), protocol="3.1.1",
    )  # fmt: skip


def _refused(transport: Any) -> bool:
    transport.start()
    wait_until(lambda: transport.last_error, 10)
    return not transport.connected and "refused" in (transport.last_error or "")


def test_anonymous_clients_and_wrong_passwords_are_refused(setup: Any, make_transport: Any) -> None:
    broker, _ = setup
    anonymous, _ = _client(make_transport, broker, None, None, connect=False)
    assert _refused(anonymous)
    wrong, _ = _client(make_transport, broker, "pi-01", "guess", connect=False)
    assert _refused(wrong)
    posing, _ = _client(make_transport, broker, CLOUD_USER, PASSWORDS["pi-01"], connect=False)
    assert _refused(posing)


def test_a_device_cannot_post_as_another_or_read_anothers_topics(setup: Any, make_transport: Any) -> None:
    broker, cloud_password = setup
    upward = [f for f, _ in cloud_subscriptions(fleet=FLEET)]
    cloud, cloud_inbox = _client(make_transport, broker, CLOUD_USER, cloud_password, *upward)
    one, one_inbox = _client(
        make_transport, broker, "pi-01", PASSWORDS["pi-01"],
        device_topic("pi-02", Channel.DESIRED, fleet=FLEET),  # another device's downward topic
        f"ef/v1/{FLEET}/dev/+/desired",  # every device's, by wildcard
        device_topic("pi-01", Channel.DESIRED, fleet=FLEET), trust_topic(FLEET),
    )  # fmt: skip
    _two, two_inbox = _client(
        make_transport, broker, "pi-02", PASSWORDS["pi-02"], device_topic("pi-02", Channel.DESIRED, fleet=FLEET)
    )
    one.publish(device_topic("pi-02", Channel.TELEMETRY, fleet=FLEET), b"forged")  # posing as pi-02
    one.publish(device_topic("pi-02", Channel.REPORTED, fleet=FLEET), b"forged", retain=True)
    one.publish(device_topic("pi-01", Channel.DESIRED, fleet=FLEET), b"self-assigned", retain=True)  # downward
    one.publish(trust_topic(FLEET), b"forged trust", retain=True)
    one.publish("ef/v1/other-fleet/dev/pi-01/telemetry", b"elsewhere")
    one.publish(device_topic("pi-01", Channel.TELEMETRY, fleet=FLEET), b"honest")  # the one that goes through
    assert cloud_inbox.wait_for(1)
    cloud.publish(device_topic("pi-02", Channel.DESIRED, fleet=FLEET), b"for pi-02 only", retain=True)
    cloud.publish(device_topic("pi-01", Channel.DESIRED, fleet=FLEET), b"for pi-01", retain=True)
    cloud.publish(trust_topic(FLEET), b"chain", retain=True)
    assert two_inbox.wait_for(1) and one_inbox.wait_for(2)
    wait_until(lambda: len(one_inbox) > 2 or len(cloud_inbox) > 1, 1.0)  # anything else would arrive by now
    assert cloud_inbox.messages == [(device_topic("pi-01", Channel.TELEMETRY, fleet=FLEET), b"honest")]
    assert sorted(one_inbox.messages) == sorted(
        [(device_topic("pi-01", Channel.DESIRED, fleet=FLEET), b"for pi-01"), (trust_topic(FLEET), b"chain")]
    )
    assert two_inbox.messages == [(device_topic("pi-02", Channel.DESIRED, fleet=FLEET), b"for pi-02 only")]


def test_a_revoked_device_is_refused_after_a_reload(setup: Any, make_transport: Any) -> None:
    broker, _ = setup
    _client(make_transport, broker, "pi-02", PASSWORDS["pi-02"])  # works before
    assert broker.config.write({"pi-01": hash_password(PASSWORDS["pi-01"])}, refresh=True) is None
    broker.reload()
    assert wait_until(lambda: "Reloading config" in broker.log_text(), 10)
    again, _ = _client(make_transport, broker, "pi-02", PASSWORDS["pi-02"], connect=False)
    assert _refused(again)
    _client(make_transport, broker, "pi-01", PASSWORDS["pi-01"])  # the others carry on


def test_the_written_files_keep_secrets_private(setup: Any) -> None:
    broker, cloud_password = setup
    folder = broker.config.directory
    for name in ("passwd", "cloud.env", "ca.key", "server.key"):
        assert (folder / name).stat().st_mode & 0o077 == 0, name
    assert cloud_password not in (folder / "passwd").read_text()
    assert f"EDGEFLEET_MQTT_PASSWORD={cloud_password}" in (folder / "cloud.env").read_text()
    assert "allow_anonymous false" in broker.config.conf_path.read_text()
