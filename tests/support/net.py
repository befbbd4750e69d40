"""Ports and polling for tests: never a fixed port, never an unbounded wait."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free right now (another process may still take it: retry on failure)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
