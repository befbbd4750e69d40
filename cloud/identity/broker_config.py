"""`edgefleet broker-config`: everything a production Mosquitto needs for one fleet, in one folder.

    mosquitto.conf   a TLS listener (and, if asked, a plain one on loopback for a cloud on the same host),
                     no anonymous clients, persistence on, queues large enough for a busy cloud subscriber
    ca.crt ca.key    the fleet CA (devices pin ca.crt; keep ca.key offline)
    server.crt/.key  the broker's certificate for the host names devices dial
    passwd           the cloud's user and every enrolled, unrevoked device (hashes only)
    acl              `cloud.identity.acl` rendered: each device its own topics, the cloud its fleet
    cloud.env        the cloud's MQTT URL and credentials (mode 0600), for `edgefleet up`

Run it again after devices are enrolled or revoked (`--refresh` rewrites passwd and acl only, keeping the
CA and the cloud's password), then reload the broker (`kill -HUP`, `systemctl reload mosquitto`): a
revoked device is then refused, and dropped if connected. (The embedded broker needs none of this: it
reads the database; see `cloud.mqtt.broker_auth`.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cloud.identity.acl import CLOUD_USER, render_mosquitto_acl
from cloud.identity.ca import write_server_pki
from cloud.identity.passwords import hash_password, new_secret, password_file, read_password_file

__all__ = ["CLOUD_USER", "TLS_PORT", "BrokerConfig"]

TLS_PORT = 8883


@dataclass(frozen=True)
class BrokerConfig:
    directory: Path
    fleet: str
    hosts: tuple[str, ...]
    tls_port: int = TLS_PORT
    local_plain_port: int | None = None  # a plain listener on 127.0.0.1 for a cloud on the broker's host

    @property
    def conf_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    def write(self, device_hashes: dict[str, str], *, refresh: bool = False) -> str | None:
        """Write the folder; returns the cloud's new password (None on refresh, which keeps the old one)."""
        if CLOUD_USER in device_hashes:
            raise ValueError(f"a device cannot be called {CLOUD_USER!r}: that is the cloud's broker user")
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "data").mkdir(exist_ok=True)
        cloud_password = None
        if refresh:
            existing = read_password_file(_read(self.directory / "passwd"))
            if CLOUD_USER not in existing:
                raise ValueError(f"{self.directory} has no broker config to refresh; run without --refresh first")
            cloud_hash = existing[CLOUD_USER]
        else:
            write_server_pki(self.directory, list(self.hosts))
            cloud_password = new_secret()
            cloud_hash = hash_password(cloud_password)
            _write(self.directory / "cloud.env", self._cloud_env(cloud_password), mode=0o600)
            _write(self.conf_path, self._mosquitto_conf(), mode=0o644)
        _write(self.directory / "passwd", password_file({CLOUD_USER: cloud_hash, **device_hashes}), mode=0o600)
        _write(self.directory / "acl", render_mosquitto_acl(self.fleet, CLOUD_USER), mode=0o644)
        return cloud_password

    def _mosquitto_conf(self) -> str:
        d = self.directory
        lines = [
            f"# EdgeFleet fleet {self.fleet}: written by `edgefleet broker-config`",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {d / 'passwd'}",
            f"acl_file {d / 'acl'}",
            "persistence true",
            f"persistence_location {d / 'data'}/",
            # the default (1000 queued QoS 1 messages per client) drops bursts to a busy cloud subscriber
            "max_queued_messages 100000",
            f"listener {self.tls_port}",
            f"cafile {d / 'ca.crt'}",
            f"certfile {d / 'server.crt'}",
            f"keyfile {d / 'server.key'}",
            "tls_version tlsv1.2",
        ]
        if self.local_plain_port:
            lines.append(f"listener {self.local_plain_port} 127.0.0.1")
        return "\n".join(lines) + "\n"

    def _cloud_env(self, password: str) -> str:
        if self.local_plain_port:
            url = f"mqtt://127.0.0.1:{self.local_plain_port}"
        else:
            url = f"mqtts://{self.hosts[0]}:{self.tls_port}"
        return (
            f"EDGEFLEET_MQTT_URL={url}\nEDGEFLEET_MQTT_USERNAME={CLOUD_USER}\nEDGEFLEET_MQTT_PASSWORD={password}\n"
            f"EDGEFLEET_MQTT_TLS_CA={self.directory / 'ca.crt'}\n"
        )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _write(path: Path, text: str, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
