"""Agent bundles for tests: built with the real `edgefleet-agent bundle`, wheels cached across runs.

The cache directory outlives a test session (CI runs on the same machine), so the wheelhouse is downloaded
once per set of inputs; set EDGEFLEET_TEST_CACHE to move it.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from edge_agent.cli import main as agent_main

ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    path = Path(os.environ.get("EDGEFLEET_TEST_CACHE", "/var/cache/edgefleet-test"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_and_unpack(arch: str, runtime: str, workdir: Path) -> Path:
    """Build a bundle for `arch` into `workdir`, unpack it there; the unpacked bundle's directory."""
    out = workdir / f"edgefleet-{arch}.tar.gz"
    code = agent_main(["bundle", "--arch", arch, "--runtime", runtime, "--out", str(out),
                       "--source", str(ROOT), "--wheel-cache", str(cache_dir() / "wheels")])  # fmt: skip
    assert code == 0, f"edgefleet-agent bundle exited {code}"
    with tarfile.open(out) as tar:
        tar.extractall(workdir, filter="data")
    (unpacked,) = [p for p in workdir.iterdir() if p.is_dir() and p.name.startswith(f"edgefleet-agent-{arch}-")]
    return unpacked


def offline_env(**extra: str) -> dict[str, str]:
    """The environment for install.sh with no way to the network: no index, no find-links, a dead proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    dead = "http://127.0.0.1:9"  # the discard port: nothing answers
    env.update(PIP_NO_INDEX="1", http_proxy=dead, https_proxy=dead, HTTP_PROXY=dead, HTTPS_PROXY=dead, **extra)
    return env
