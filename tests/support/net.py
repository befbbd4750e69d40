"""Ports and polling for tests: never a fixed port, never an unbounded wait."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free right now (another process may still take it: retry on failure)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_for_restarts(host: str = "127.0.0.1") -> int:
    """A free TCP port below the OS's ephemeral range, for a server that must bind it again after a restart.

    A port from `free_port` is in that range: while the server is down, any outgoing connection on the machine
    may get it as its source port, and the restarted server's bind then fails (EADDRINUSE). Seen in CI: the
    systemd test's agent, killed by the watchdog, could not listen on its gRPC port again 6 times in a row.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = range(max(1024, low - 12000), low)
    for port in random.sample(candidates, min(200, len(candidates))):  # bounded
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    return free_port(host)


def wait_until(predicate: Callable[[], T], timeout_s: float = 5.0, interval_s: float = 0.02) -> T | None:
    """Poll predicate until it returns something truthy (returned) or timeout_s passes (None).

    Use as `assert wait_until(lambda: len(got) == 3, 5)`; the predicate runs at least once.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval_s)


def port_accepts(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """True if a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
