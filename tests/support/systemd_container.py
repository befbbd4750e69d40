"""A Debian bookworm x86_64 root booted by a real systemd (252) in a container, for the agent's unit.

The root is made by `debootstrap` (python3, python3-venv, systemd, dbus; ~2-4 min) and cached in the test cache
directory, keyed by its inputs. `Booted(root)` boots it with `systemd-nspawn --boot --volatile=overlay`: the
cached root is the lower layer of an overlay whose upper layer is a tmpfs, so every boot starts from the clean
root and nothing a test installs stays. The container shares the host's network namespace (loopback
brokers and gRPC ports are reachable both ways) and is not registered with machined (this host's PID 1 is not
systemd: `--register=no --keep-unit`); commands run inside through `nsenter` into its PID 1's namespaces.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

from support.cache_lock import cache_key, cache_locked

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
INCLUDE = ("python3", "python3-venv", "systemd", "dbus")
_ROOT_RECIPE = 1  # bump when the way the root is made changes


def missing_tools() -> list[str]:
    return [tool for tool in ("debootstrap", "systemd-nspawn", "nsenter") if shutil.which(tool) is None]


def systemd_root(cache: Path) -> Path:
    """The cached root (made on first use)."""
    key = cache_key({"suite": SUITE, "mirror": MIRROR, "include": INCLUDE, "recipe": _ROOT_RECIPE})
    root = cache / f"x86_64-systemd-{SUITE}-{key}"
    with cache_locked(cache, "systemd-root"):
        if (root / ".complete").is_file():
            return root
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE,
                               str(partial), MIRROR], capture_output=True, text=True, timeout=1800)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        shutil.rmtree(partial / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        (partial / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True)
        # a booted container needs no login prompts or network setup of its own (it shares the host's)
        for unit in ("getty.target", "console-getty.service", "systemd-networkd.service", "systemd-resolved.service"):
            mask = partial / "etc" / "systemd" / "system" / unit
            mask.unlink(missing_ok=True)
            mask.symlink_to("/dev/null")
        (partial / ".complete").write_text(key + "\n")
        partial.rename(root)
    return root


class Booted:
    """The root booted by systemd in a container; `run` executes a command inside (as root)."""

    def __init__(self, root: Path, log: Path, binds: dict[Path, str] | None = None, boot_timeout_s: float = 120):
        self.root, self.log_path, self.binds, self.boot_timeout_s = root, log, binds or {}, boot_timeout_s
        self.leader = 0  # the container's PID 1, as the host sees it
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Booted:
        binds = [f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()]
        command = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", f"--directory={self.root}",
                   "--volatile=overlay", "--console=pipe", "--boot", *binds]  # fmt: skip
        with self.log_path.open("wb") as out:
            self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                             start_new_session=True)  # fmt: skip
        try:
            self.leader = self._find_leader()
            self._wait_booted()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_booted(self) -> None:
        deadline = time.monotonic() + self.boot_timeout_s
        while True:  # systemctl fails until the container's systemd has opened its private socket
            state = self.run(["systemctl", "is-system-running", "--wait"], timeout=self.boot_timeout_s, check=False)
            if state.stdout.strip() in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the container did not boot: {state.stdout.strip()!r} {state.stderr.strip()!r}\n"
                                   f"{self.log()[-4000:]}")  # fmt: skip
            time.sleep(0.5)

    def _find_leader(self) -> int:
        """nspawn's child that runs /lib/systemd/systemd (the container's PID 1)."""
        assert self._process is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self._process.returncode}:\n{self.log()[-4000:]}")
            for task in Path(f"/proc/{self._process.pid}/task").glob("*/children"):
                for pid in task.read_text().split():
                    with contextlib.suppress(OSError):
                        if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                            return int(pid)
            time.sleep(0.1)
        raise RuntimeError(f"no systemd started in the container:\n{self.log()[-4000:]}")

    def run(self, command: list[str], *, timeout: float = 120, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """`command` inside the container (its mount, PID, IPC and UTS namespaces and its root), as root."""
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}  # fmt: skip
        done = subprocess.run(["nsenter", f"--target={self.leader}", "--mount", "--pid", "--ipc", "--uts",
                               "--root", "--wd", "--", *command],
                              capture_output=True, text=True, timeout=timeout, env=env, input=stdin)  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"{command} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """systemctl show's properties of `unit`."""
        out = self.run(["systemctl", "show", unit, *(f"--property={p}" for p in properties)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        # SIGTERM to nspawn: an orderly shutdown of the container (SIGRTMIN+3 to its systemd)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
