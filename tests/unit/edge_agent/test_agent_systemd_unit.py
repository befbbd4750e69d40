"""The bundle's systemd unit passes `systemd-analyze verify` with no warning: a misspelt hardening directive
is only a warning to systemd, which then runs the agent without it."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed here (Debian: systemd)")


def _verify(unit_text: str, tmp_path: Path) -> str:
    """systemd-analyze verify's complaints about this unit text, with ExecStart's program made to exist here."""
    program = tmp_path / "edgefleet-agent"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    unit = tmp_path / "edgefleet-agent.service"
    unit.write_text(unit_text.replace("/opt/edgefleet/venv/bin/edgefleet-agent", str(program)))
    assert ANALYZE is not None
    done = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if "edgefleet-agent" in line]
    if done.returncode != 0:
        complaints.append(f"exit {done.returncode}")
    return "\n".join(complaints)


def _unit_text() -> str:
    return resources.files("edge_agent.bundle_files").joinpath("edgefleet-agent.service").read_text()


def test_the_unit_verifies_cleanly(tmp_path: Path) -> None:
    text = _unit_text()
    assert "ExecStart=/opt/edgefleet/venv/bin/edgefleet-agent " in text  # the path the test stands in for
    assert _verify(text, tmp_path) == ""


def test_a_misspelt_directive_is_caught(tmp_path: Path) -> None:
    text = _unit_text().replace("ProtectSystem=strict", "ProtectSytem=strict")
    assert "ProtectSytem" in _verify(text, tmp_path)
