"""The two brokers EdgeFleet secures, behind one face for the broker attack tests:

* "mosquitto": a real Mosquitto run with exactly what `edgefleet broker-config` writes (TLS, passwd, acl);
  revoking rewrites passwd and acl (`--refresh`) and reloads it (SIGHUP), as an operator would.
* "embedded": the embedded broker with auth on, reading the credentials `enroll_device` issued from a
  real database; revoking is `revoke_device` committed (the broker reads the database on every CONNECT).

Both enroll the same devices and hand out the same kinds of credentials, so one attack runs on both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from sqlalchemy import Engine
from sqlmodel import Session

from cloud.db import create_tables, make_engine
from cloud.identity.broker_config import BrokerConfig
from cloud.identity.enrollment import enroll_device, revoke_device
from cloud.identity.passwords import hash_password
from cloud.mqtt.broker import EmbeddedBroker
from cloud.mqtt.broker_auth import BrokerAuthority, cloud_password
from support.mosquitto import ConfiguredMosquitto
from support.net import free_port, wait_until

FLEET = "lab"
DEVICES = ("pi-01", "pi-02")


@dataclass
class SecuredBroker:
    kind: str
    broker: Any  # ConfiguredMosquitto or EmbeddedBroker
    cloud_password: str
    passwords: dict[str, str]
    tls_ca: str | None = None
    engine: Engine | None = None
    _revoked: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return str(self.broker.url)

    @property
    def mqtt_protocol(self) -> str:
        return "3.1.1"  # amqtt speaks only 3.1.1; Mosquitto is held to the same for a like-for-like test

    def revoke(self, device_id: str) -> None:
        """Withdraw device_id's credentials the way each broker's operator would."""
        self._revoked.add(device_id)
        if self.engine is not None:
            with Session(self.engine) as session:
                assert revoke_device(session, device_id)
                session.commit()
            return
        broker: ConfiguredMosquitto = self.broker
        live = {d: hash_password(pw) for d, pw in self.passwords.items() if d not in self._revoked}
        assert broker.config.write(live, refresh=True) is None
        reloads = broker.log_text().count("Reloading config")
        broker.reload()
        assert wait_until(lambda: broker.log_text().count("Reloading config") > reloads, 10)

    def stop(self) -> None:
        self.broker.stop()
        if self.engine is not None:
            self.engine.dispose()


def start_mosquitto(workdir: Path) -> SecuredBroker:
    config = BrokerConfig(workdir / "broker", FLEET, ("localhost", "127.0.0.1"), tls_port=free_port())
    passwords = {d: f"pw-{d}-" + "x" * 30 for d in DEVICES}
    password = config.write({d: hash_password(pw) for d, pw in passwords.items()})
    assert password is not None
    broker = ConfiguredMosquitto(config).start()
    return SecuredBroker("mosquitto", broker, password, passwords, tls_ca=str(config.directory / "ca.crt"))


def start_embedded(
    workdir: Path, database_url: str, *, recheck_s: float = 3600.0, broker_class: type[Broker] | None = None
) -> SecuredBroker:
    engine = make_engine(database_url)
    create_tables(engine)
    with Session(engine) as session:
        passwords = {d: enroll_device(session, d).password for d in DEVICES}
        session.commit()
    password = cloud_password(workdir)
    broker = EmbeddedBroker(authority=BrokerAuthority(engine, FLEET, password), recheck_s=recheck_s)
    if broker_class is not None:
        broker.broker_class = broker_class
    broker.start()
    return SecuredBroker("embedded", broker, password, passwords, engine=engine)
