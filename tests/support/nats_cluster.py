"""A 3-node NATS cluster on loopback with JetStream and the MQTT gateway on every node, for one test.

Each node gets its own config, store and ports (the OS picks them); they route to each other, and the test
is handed `node_urls` (mqtt://127.0.0.1:PORT per node) once every node answers MQTT and a retained message
published on one node can be read on every other (the JetStream cluster that keeps retained messages and
sessions has a leader). NATS's MQTT gateway speaks MQTT 3.1.1 only: no shared subscriptions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO

from support.net import free_port, port_accepts

READY_TIMEOUT_S = 60.0


class NatsClusterError(RuntimeError):
    """The cluster did not come up; the message carries the nodes' logs."""


def nats_server_binary() -> str | None:
    """$EDGEFLEET_NATS_SERVER if set, else nats-server on PATH or in /usr/sbin (Debian's nats-server)."""
    override = os.environ.get("EDGEFLEET_NATS_SERVER")
    candidates = [override] if override is not None else [shutil.which("nats-server"), "/usr/sbin/nats-server"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class NatsCluster:
    def __init__(self, workdir: Path, nodes: int = 3) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise NatsClusterError("nats-server is not installed (Debian: apt-get install nats-server)")
        self.binary = binary
        self.workdir = workdir
        self.client_ports = [free_port() for _ in range(nodes)]
        self.cluster_ports = [free_port() for _ in range(nodes)]
        self.mqtt_ports = [free_port() for _ in range(nodes)]
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    @property
    def node_urls(self) -> list[str]:
        return [f"mqtt://127.0.0.1:{port}" for port in self.mqtt_ports]

    def _config(self, i: int) -> Path:
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.cluster_ports)
        store = self.workdir / f"js{i}"
        text = (
            f"server_name: n{i}\nlisten: 127.0.0.1:{self.client_ports[i]}\n"
            f"jetstream {{ store_dir: {store} }}\n"
            f"cluster {{ name: edgefleet-test, listen: 127.0.0.1:{self.cluster_ports[i]}, routes: [{routes}] }}\n"
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_ports[i]} }}\n"
        )
        path = self.workdir / f"n{i}.conf"
        path.write_text(text)
        return path

    def start(self) -> NatsCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for i in range(len(self.mqtt_ports)):
            log = (self.workdir / f"n{i}.log").open("wb")
            self._logs.append(log)
            self.processes.append(
                subprocess.Popen([self.binary, "-c", str(self._config(i))], stdout=log, stderr=subprocess.STDOUT)
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        from edge_agent.paho_transport import PahoTransport

        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(port_accepts("127.0.0.1", p) for p in self.mqtt_ports):
            self._check_alive()
            if time.monotonic() > deadline:
                raise NatsClusterError(f"the MQTT ports did not open:\n{self.logs()}")
            time.sleep(0.1)
        # retained messages live in a clustered JetStream stream: ready once one crosses every node
        topic, payload = f"edgefleet-test/ready/{uuid.uuid4().hex}", b"ready"
        publisher = PahoTransport(self.node_urls[0], f"ready-pub-{uuid.uuid4().hex[:8]}", protocol="3.1.1")
        publisher.start()
        try:
            for url in self.node_urls[1:]:
                while not self._reads_retained(url, topic, payload, publisher):
                    self._check_alive()
                    if time.monotonic() > deadline:
                        raise NatsClusterError(f"no retained message crossed the cluster:\n{self.logs()}")
        finally:
            publisher.stop()

    @staticmethod
    def _reads_retained(url: str, topic: str, payload: bytes, publisher: object) -> bool:
        from edge_agent.paho_transport import PahoTransport

        if getattr(publisher, "connected", False):
            publisher.publish(topic, payload, qos=1, retain=True)  # type: ignore[attr-defined]
        got: list[bytes] = []
        reader = PahoTransport(url, f"ready-sub-{uuid.uuid4().hex[:8]}", protocol="3.1.1")
        reader.set_message_handler(lambda _t, p: got.append(p))
        reader.subscribe(topic, 1)
        reader.start()
        try:
            end = time.monotonic() + 3.0
            while time.monotonic() < end and payload not in got:
                time.sleep(0.05)
            return payload in got
        finally:
            reader.stop()

    def _check_alive(self) -> None:
        if any(p.poll() is not None for p in self.processes):
            raise NatsClusterError(f"a nats-server exited:\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for i in range(len(self.mqtt_ports)):
            path = self.workdir / f"n{i}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- node n{i}\n{text[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes = []
        for log in self._logs:
            log.close()
        self._logs = []

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
