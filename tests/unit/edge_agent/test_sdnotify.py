"""The agent's sd_notify speaks systemd's datagram protocol to a real AF_UNIX socket."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from edge_agent.clock import SystemClock
from edge_agent.sdnotify import Notifier


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2)
        yield sock, path


def test_ready_watchdog_and_stopping_arrive_as_datagrams(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.enabled and notifier.watchdog_interval_s == 15.0
    assert notifier.ready("agent pi-01 running")
    assert sock.recv(4096) == b"READY=1\nSTATUS=agent pi-01 running"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_an_abstract_socket_name_is_used_with_its_nul_byte() -> None:
    name = f"edgefleet-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(64) == b"READY=1"


def test_outside_systemd_nothing_is_sent_and_no_watchdog() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval_s is None
    assert not notifier.ready() and not notifier.watchdog()


def test_a_watchdog_meant_for_another_process_is_ignored(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "x"), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog_interval_s is None
    assert not notifier.ready()  # nobody listens at that path: reported, not raised


def test_a_hung_agent_loop_shows_as_stalled_so_the_run_command_stops_pinging(make_agent: Any) -> None:
    """`edgefleet-agent run` pings systemd's watchdog only while Agent.loop_stalled_s() stays small: a step
    that hangs (here: the clock it reads blocks) must make it grow, and a loop that steps again reset it."""
    clock = GatedClock()
    agent = make_agent(clock=clock)
    assert wait_until(lambda: agent.loop_stalled_s() < 0.5, timeout_s=5)
    clock.gate.clear()
    time.sleep(1.5)
    stalled = agent.loop_stalled_s()
    clock.gate.set()
    assert stalled > 1.0
    assert wait_until(lambda: agent.loop_stalled_s() < 0.5, timeout_s=5)


class GatedClock(SystemClock):
    """The system clock, whose reads wait while the gate is closed (a step that never returns)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def now(self) -> Any:
        self.gate.wait(30)
        return super().now()
