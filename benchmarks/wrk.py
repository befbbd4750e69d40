"""Load from `wrk` (a C load generator), for the console API benchmarks.

A Python load generator on this 2-core machine eats about as much CPU as the server it measures, and with
100 closed-loop clients always waiting the latency it reports is mostly 100 / throughput; wrk costs the
server far less. `run` returns None when wrk is not installed, so a caller can fall back to its Python
generator and say which one it used (`generator` in each row).

Keep-alive is wrk's default; a new connection per request is asked with `Connection: close` (the server
closes after each answer and wrk reconnects). `client_cpu` is wrk's CPU seconds per second of the run.
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import threading
import time
from typing import Any

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def available() -> bool:
    return shutil.which("wrk") is not None


def run(url: str, path: str, token: str, clients: int, seconds: float, keepalive: bool,
        headers: tuple[str, ...] = ()) -> dict[str, Any] | None:  # fmt: skip
    """`clients` connections for `seconds` on url+path; p50/p99 (ms), requests/s, failures. None: no wrk.
    An empty token sends no Authorization; `headers` ("Name: value") are sent too."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    command = [wrk, "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
    for header in ((f"Authorization: Bearer {token}",) if token else ()) + headers:
        command += ["-H", header]
    if not keepalive:
        command += ["-H", "Connection: close"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with SchedulerDelay() as delay:
        out = subprocess.run([*command, url.rstrip("/") + path], capture_output=True, text=True,
                             timeout=seconds + 60, check=True).stdout  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"generator": "wrk", "keepalive": keepalive, "path": path, "clients": clients, **parse(out),
            "client_cpu": round(cpu / seconds, 2), "sched_delay_p99_ms": delay.p99_ms()}


class SchedulerDelay:
    """How late a 1 ms sleep wakes up while the load runs (p99, ms): the time a runnable process waits for a
    core on this machine then, a floor under any server's p99 that no change to the server removes."""

    def __init__(self) -> None:
        self._late: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)

    def __enter__(self) -> SchedulerDelay:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _probe(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            time.sleep(0.001)
            self._late.append((time.perf_counter() - start) * 1000 - 1.0)

    def p99_ms(self) -> float | None:
        ordered = sorted(self._late)
        return round(ordered[int(0.99 * (len(ordered) - 1))], 2) if ordered else None


def parse(out: str) -> dict[str, Any]:
    """The figures of wrk's `--latency` report."""
    requests = int(_find(r"(\d+) requests in", out))
    non_2xx = int(_find(r"Non-2xx or 3xx responses: (\d+)", out, "0"))
    errors = _find(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out, None, all_groups=True)
    # a read error on a `Connection: close` run is the server closing as asked, not a failure; timeouts are
    failed = non_2xx + (int(errors[0]) + int(errors[3]) if errors else 0)
    return {"requests": requests, "failed": failed, "rps": float(_find(r"Requests/sec:\s+([\d.]+)", out)),
            "p50_ms": _ms(_find(r"\s50%\s+([\d.]+\w+)", out)), "p99_ms": _ms(_find(r"\s99%\s+([\d.]+\w+)", out))}


def _find(pattern: str, text: str, default: Any = ..., all_groups: bool = False) -> Any:
    match = re.search(pattern, text)
    if match is None:
        if default is ...:
            raise ValueError(f"wrk's report has no {pattern!r}:\n{text}")
        return default
    return match.groups() if all_groups else match.group(1)


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return round(float(number) * _UNITS_MS[unit], 2)
