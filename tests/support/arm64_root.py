"""A Debian bookworm arm64 root for running the agent under qemu-user on this x86_64 machine.

`debootstrap --foreign` downloads and unpacks the packages; instead of its second stage (a chroot that
needs binfmt_misc registered for aarch64, a change to the host's kernel shared by everything on it) the
included packages are unpacked with `dpkg-deb -x`: python3 needs none of their maintainer scripts.
Programs then run as `qemu-aarch64-static -L ROOT ROOT/usr/bin/python3 ...`: qemu looks up absolute paths
under ROOT first, so the aarch64 dynamic loader and libraries come from the root.

Both the root and the agent's venv in it are slow to make (~30 s and ~90 s), so they are cached in the
test cache directory, keyed by a hash of their inputs; a lock keeps two test runs from building at once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from support.cache_lock import cache_key, cache_locked

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
INCLUDE = ("python3", "python3-venv", "ca-certificates")
_ROOT_RECIPE = 1  # bump when the way the root is made changes


def missing_tools() -> list[str]:
    return [tool for tool in ("debootstrap", "qemu-aarch64-static", "dpkg-deb") if shutil.which(tool) is None]


def qemu(root: Path) -> list[str]:
    """The prefix that runs one of the root's aarch64 programs."""
    return [str(shutil.which("qemu-aarch64-static")), "-L", str(root)]


def _run(command: list[str], what: str, timeout: float, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def arm64_root(cache: Path) -> Path:
    """The cached root (made on first use): python3 and python3-venv for aarch64."""
    key = cache_key({"suite": SUITE, "mirror": MIRROR, "include": INCLUDE, "recipe": _ROOT_RECIPE})
    root = cache / f"arm64-{SUITE}-{key}"
    with cache_locked(cache, "arm64"):
        if (root / ".complete").is_file():
            return root
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _run(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", f"--include={','.join(INCLUDE)}",
              SUITE, str(partial), MIRROR], "debootstrap --foreign", timeout=900)  # fmt: skip
        archives = partial / "var" / "cache" / "apt" / "archives"
        for deb in sorted(archives.glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(partial)], f"dpkg-deb -x {deb.name}", timeout=120)
            deb.unlink()  # the unpacked root is what is kept; the archives would double its size
        python = partial / "usr" / "bin" / "python3"
        _run([*qemu(partial), str(python), "-c", "import venv, ssl, sqlite3"], "python3 under qemu", timeout=120)
        (partial / ".complete").write_text(key + "\n")
        partial.rename(root)
    return root


def installed_agent(root: Path, bundle: Path) -> Path:
    """A venv in `root` made by the bundle's own install.sh (offline); the venv's directory.

    The venv is kept for bundles with the same dependency wheels; the agent's own wheel, rebuilt for every
    run, is then reinstalled into it alone, which takes seconds instead of the minute and a half under qemu.
    """
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    deps = [w for w in wheels if not w.name.startswith("edgefleet-")]
    key = cache_key({"deps": [hashlib.sha256(w.read_bytes()).hexdigest() for w in deps], "root": root.name})
    prefix = root / "opt" / f"edgefleet-{key}"
    venv, python = prefix / "venv", prefix / "venv" / "bin" / "python"
    env = offline_install_env(root)
    with cache_locked(root.parent, "arm64"):
        if not (prefix / ".complete").is_file():
            shutil.rmtree(prefix, ignore_errors=True)
            _run([str(bundle / "install.sh"), "--prefix", str(prefix), "--no-systemd"], "install.sh", 900, env)
            (prefix / ".complete").write_text(key + "\n")
        else:
            (agent_wheel,) = [w for w in wheels if w.name.startswith("edgefleet-")]
            pip = [*qemu(root), str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                   "--force-reinstall", "--no-compile", str(agent_wheel)]  # fmt: skip
            _run(pip, "pip install of the agent wheel", 600, env)
    return venv


def offline_install_env(root: Path) -> dict[str, str]:
    """install.sh's environment for the arm64 root: its python3 under qemu, no index, a dead proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    dead = "http://127.0.0.1:9"
    env.update(PIP_NO_INDEX="1", PIP_CONFIG_FILE="/dev/null", http_proxy=dead, https_proxy=dead,
               EDGEFLEET_PYTHON=str(root / "usr" / "bin" / "python3"), EDGEFLEET_RUN=" ".join(qemu(root)))  # fmt: skip
    return env
