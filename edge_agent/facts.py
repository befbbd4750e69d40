"""What the device is, for the ReportedState's DeviceFacts: architecture, OS, Python, the runtimes that
import, CPU, memory, temperature and throttling (where readable), free disk in the state directory.

Everything is read from /proc, /sys and /etc with the standard library (no psutil on a small device);
anything unreadable stays unset. The fixed facts are read once; the changing ones at most every
REFRESH_S, since a report can follow every state change.
"""

from __future__ import annotations

import contextlib
import glob
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from protocols.v1 import messages_pb2 as pb

REFRESH_S = 30.0


class FactsSource(Protocol):
    """What the agent asks for the facts it reports: `FactsReader` on a device, made-up ones in a simulation."""

    def read(self) -> pb.DeviceFacts: ...


class FactsReader:
    def __init__(self, state_dir: Path, runtimes: Iterable[tuple[str, str]], root: Path = Path("/")) -> None:
        self._state_dir = Path(state_dir)
        self._root = root  # tests point it at a fake /proc, /sys and /etc
        self._fixed = pb.DeviceFacts(
            architecture=platform.machine(),
            os=_os_name(root / "etc/os-release"),
            python_version=platform.python_version(),
            runtimes=[pb.RuntimeInfo(name=n, version=v) for n, v in runtimes],
            cpu_count=os.cpu_count() or 0,
            cpu_model=_cpu_model(root / "proc/cpuinfo"),
        )
        self._facts: pb.DeviceFacts | None = None
        self._read_at = 0.0

    def read(self) -> pb.DeviceFacts:
        now = time.monotonic()
        if self._facts is None or now - self._read_at >= REFRESH_S:
            self._facts, self._read_at = self._read_now(), now
        return self._facts

    def _read_now(self) -> pb.DeviceFacts:
        facts = pb.DeviceFacts()
        facts.CopyFrom(self._fixed)
        memory = _meminfo(self._root / "proc/meminfo")
        facts.memory_total_bytes = memory.get("MemTotal", 0)
        facts.memory_available_bytes = memory.get("MemAvailable", 0)
        temperature = _temperature(self._root)
        if temperature is not None:
            facts.temperature_c = temperature
        facts.throttled = _throttled()
        with contextlib.suppress(OSError):
            # as shutil.disk_usage, without importing shutil (0.4 MB with bz2 and lzma) into the agent
            disk = os.statvfs(self._state_dir)
            facts.disk_free_bytes = disk.f_bavail * disk.f_frsize
        return facts


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _os_name(path: Path) -> str:
    fields = dict(line.split("=", 1) for line in _read(path).splitlines() if "=" in line)
    name = fields.get("PRETTY_NAME") or fields.get("NAME") or ""
    return name.strip().strip('"')


def _cpu_model(path: Path) -> str:
    # x86: "model name"; a Raspberry Pi's kernel names the board in "Model", the core in "CPU part"
    found: dict[str, str] = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(":")
        found.setdefault(key.strip(), value.strip())
    return found.get("model name") or found.get("Model") or found.get("Hardware") or found.get("CPU part", "")


def _meminfo(path: Path) -> dict[str, int]:
    values = {}
    for line in _read(path).splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def _temperature(root: Path) -> float | None:
    """The hottest thermal zone in °C (the kernel gives millidegrees)."""
    readings = []
    for zone in sorted(glob.glob(str(root / "sys/class/thermal/thermal_zone*/temp"))):
        text = _read(Path(zone)).strip()
        if text.lstrip("-").isdigit():
            readings.append(int(text) / 1000.0)
    return max(readings) if readings else None


def _throttled() -> str:
    """`vcgencmd get_throttled` ("throttled=0x50005" -> "0x50005"); "" where there is no vcgencmd."""
    try:  # no vcgencmd on PATH: FileNotFoundError, an OSError
        done = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip().partition("=")[2] if done.returncode == 0 else ""
