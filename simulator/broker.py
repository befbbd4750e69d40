"""A Mosquitto the scenario owns (`[scenario] broker = "mosquitto"`), so that `broker_restart` can stop and
start a real broker: its own config in the run's data dir, a loopback port, persistence on (retained
desired states, trust chain and artifact chunks survive a restart, as on a production broker that saves
its database), anonymous access (a rehearsal on loopback: devices still log in with their enrolled
password, which an anonymous listener accepts without checking; a production broker checks it and applies
the per-device ACL, see `edgefleet broker-config`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

__all__ = ["BrokerError", "OwnedMosquitto", "end_mosquitto", "mosquitto_binary"]

START_TIMEOUT_S = 10.0


class BrokerError(RuntimeError):
    """Mosquitto is missing or did not start; the message says which (with its log)."""


def mosquitto_binary() -> str | None:
    """$EDGEFLEET_MOSQUITTO if set, else mosquitto on PATH, else /usr/sbin/mosquitto."""
    override = os.environ.get("EDGEFLEET_MOSQUITTO")
    candidates = [override] if override is not None else [shutil.which("mosquitto"), "/usr/sbin/mosquitto"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def end_mosquitto(proc: subprocess.Popen[bytes] | None, log: IO[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """Send a running mosquitto `sig` (SIGTERM: it saves its persistence file; SIGKILL: nothing) and wait,
    killing it if it has not exited within 10 s; then close its log. (The tests' brokers end the same way.)"""
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if log is not None:
        log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class OwnedMosquitto:
    def __init__(self, workdir: Path) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise BrokerError(
                'broker = "mosquitto" needs the mosquitto binary (PATH, /usr/sbin or $EDGEFLEET_MOSQUITTO)'
            )
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def __enter__(self) -> OwnedMosquitto:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        config = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 0",  # saved on a clean stop
            "max_queued_messages 100000",  # the cloud's worker subscribes for the whole fleet
            "log_dest stderr",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to 'mosquitto', who cannot read the data dir
        config.write_text("\n".join(lines) + "\n")
        self._log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen([self.binary, "-c", str(config)], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if _accepts(self.port):
                return
            time.sleep(0.02)
        self.stop()
        log = (self.workdir / "mosquitto.log").read_text(errors="replace")[-2000:]
        raise BrokerError(f"mosquitto did not start on 127.0.0.1:{self.port}:\n{log}")

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its retained messages and exits."""
        proc, self._proc, log, self._log = self._proc, None, self._log, None
        end_mosquitto(proc, log)

    def restart(self) -> None:
        self.stop()
        self.start()  # the same port: clients reconnect to the same URL
