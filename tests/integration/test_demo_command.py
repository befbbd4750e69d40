"""`edgefleet demo` is the product's front door: it must run the whole loop and say what happened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_the_loop_and_prints_a_summary(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "160"}
    done = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "demo", "--devices", "3", "--inferences", "60",
         "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"data in {data_dir}" in out.replace("\n", "")
    for device in ("demo-01", "demo-02", "demo-03"):
        row = next((line for line in out.splitlines() if line.lstrip("│ ").startswith(device)), "")
        assert "active" in row and " 60 " in row, f"{device}: {row!r}\n{out}"
    assert "Drift per feature" in out and "drift injected" in out
    assert (data_dir / "edgefleet.db").is_file()
    assert (data_dir / "keys" / "trust.chain").is_file()
