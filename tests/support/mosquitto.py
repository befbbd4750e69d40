"""Run a private Mosquitto for one test: own config in a temp dir, a port the OS picks, stop/restart/kill.

The config is generated per broker (listener on 127.0.0.1, persistence off unless asked, anonymous access
unless users are given), so tests never touch the system's Mosquitto on 1883.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from cloud.identity.broker_config import BrokerConfig
from cloud.identity.passwords import hash_password, password_file
from simulator.broker import end_mosquitto
from support.net import free_port_for_restarts, port_accepts
from support.tls import TlsFiles

_START_ATTEMPTS = 5


class MosquittoError(RuntimeError):
    """Mosquitto could not be set up or did not start; the message carries its log."""


def mosquitto_binary() -> str | None:
    """Path of the mosquitto broker binary: $EDGEFLEET_MOSQUITTO if set (set it to a path that does not
    exist to test as on a machine without mosquitto), else PATH, else /usr/sbin/mosquitto."""
    override = os.environ.get("EDGEFLEET_MOSQUITTO")
    candidates = [override] if override is not None else [shutil.which("mosquitto"), "/usr/sbin/mosquitto"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def mosquitto_passwd_binary() -> str | None:
    found = shutil.which("mosquitto_passwd")
    return found or ("/usr/bin/mosquitto_passwd" if os.access("/usr/bin/mosquitto_passwd", os.X_OK) else None)


class MosquittoBroker:
    """One mosquitto process. `start()` returns once it accepts TCP connections."""

    kind = "mosquitto"
    mqtt_protocol = "5"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        users: dict[str, str] | None = None,
        persistence: bool = False,
        tls: TlsFiles | None = None,
        binary: str | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        found = binary or mosquitto_binary()
        if found is None:
            raise MosquittoError("mosquitto binary not found (set EDGEFLEET_MOSQUITTO)")
        self.binary = found
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self._fixed_port = port is not None
        self.port = port or free_port_for_restarts()  # restart() binds it again: below the ephemeral range
        self.users = dict(users or {})
        self.persistence = persistence
        self.tls = tls
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.log_path = self.workdir / "mosquitto.log"
        self.config_path = self.workdir / "mosquitto.conf"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def cpu_s(self) -> float:
        """CPU time the broker process has used so far, in seconds (0 when it is not running)."""
        if self._proc is None:
            return 0.0
        from simulator.process_fleet import cpu_s

        return cpu_s(self._proc.pid)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> MosquittoBroker:
        if self.running:
            return self
        self._write_config()
        for attempt in range(_START_ATTEMPTS):
            if self._try_start():
                self._fixed_port = True  # a later start() (after stop()) comes back on the same URL
                return self
            # the port we picked was taken between picking and bind(): pick another, unless pinned
            if self._fixed_port or attempt == _START_ATTEMPTS - 1:
                break
            self.port = free_port_for_restarts()
            self._write_config()
        raise MosquittoError(f"mosquitto did not start on {self.host}:{self.port}:\n{self.log_text()}")

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file, if any) and wait."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without saving anything."""
        self._end(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections and buffers what clients send, but the broker reads
        nothing until resume() (a broker too busy to keep up). Pair it with resume() in a finally."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> MosquittoBroker:
        """Stop and start again on the same port (clients reconnect to the same URL)."""
        self.stop()
        return self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------------

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.users else 'true'}",
            f"persistence {'true' if self.persistence else 'false'}",
            # mosquitto's default (1000 queued QoS 1 messages per client) drops a burst to a busy subscriber
            # ("Outgoing messages are being dropped"); a cloud worker subscribed to every device needs more
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if self.persistence:
            lines.append(f"persistence_location {self.workdir}/")
            lines.append("autosave_interval 0")
        if self.users:
            lines.append(f"password_file {self._write_password_file()}")
        if self.tls:
            lines.append(f"cafile {self.tls.ca_path}")
            lines.append(f"certfile {self.tls.cert_path}")
            lines.append(f"keyfile {self.tls.key_path}")
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise mosquitto drops to 'mosquitto', who cannot read our temp dir
        self.config_path.write_text("\n".join(lines) + "\n")

    def _write_password_file(self) -> Path:
        # the hashes EdgeFleet writes for production brokers, so every auth test checks that format too
        path = self.workdir / "passwords"
        path.write_text(password_file({user: hash_password(pw) for user, pw in self.users.items()}))
        path.chmod(0o600)
        return path

    def _try_start(self) -> bool:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _end()
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)], stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._end(signal.SIGTERM)
                return False
            if port_accepts(self.host, self.port):
                return True
            time.sleep(0.02)
        self._end(signal.SIGKILL)
        return False

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc, log, self._log = self._proc, None, self._log, None
        end_mosquitto(proc, log, sig)


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
        assert self._proc is not None
        self._proc.send_signal(signal.SIGHUP)
