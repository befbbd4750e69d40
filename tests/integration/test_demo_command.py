"""`edgefleet demo` is the product's front door: it must run the whole loop and say what happened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import MosquittoBroker, mosquitto_binary

pytestmark = pytest.mark.integration


def _recovery_row(out: str, device: str) -> list[str]:
    """The device's row of the closing accuracy table: device, site, v1 acc, CI, n, v2 acc, CI, n."""
    table = out[out.index("Accuracy from field labels"):]
    return next(line.split() for line in table.splitlines() if line.startswith(device))


def test_demo_runs_the_loop_closes_it_and_prints_a_summary(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "80"}  # a small terminal: every table fits, nothing is cut
    done = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "demo", "--devices", "3", "--inferences", "200",
         "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"data in {data_dir}" in out.replace("\n", "")
    for device in ("demo-01", "demo-02", "demo-03"):
        row = next((line for line in out.splitlines() if line.lstrip("│ ").startswith(device)), "")
        assert "active" in row and " 200 " in row, f"{device}: {row!r}\n{out}"
    # the loop closes: labels back through the API, a drift-triggered retrain the challenger wins, its
    # canary completes, and the drifted device's field accuracy recovers while the others' stays
    assert "sent back through POST /api/v1/feedback" in out, out
    assert "retrain triggered by drift" in out and "-> WIN, challenger v2" in out, out
    assert "completed, wave 2/2" in out and "champion, production -> v2" in out, out
    drifted, baseline = _recovery_row(out, "demo-02"), _recovery_row(out, "demo-01")
    assert drifted[1] == "drifted" and float(drifted[5]) > float(drifted[2]) + 0.2, out
    assert baseline[1] == "baseline" and float(baseline[5]) > 0.9 and float(baseline[2]) > 0.9, out
    assert "Feature drift, PSI" in out and "drift injected" in out
    tables = [line for line in done.stdout.splitlines() if line.startswith(("artifact", "model.", "device", "demo-",
                                                                             "feature", "f", "─"))]
    wide = [line for line in tables if len(line) > 80]
    assert not wide and "…" not in done.stdout, wide
    assert (data_dir / "edgefleet.db").is_file()
    assert (data_dir / "keys" / "trust.chain").is_file()


@pytest.mark.skipif(mosquitto_binary() is None, reason="needs the mosquitto binary")
def test_demo_twice_on_one_broker_succeeds_both_times(tmp_path: Path) -> None:
    """The first run's retained desired states (another root key, counter 1) stay on the broker; the second
    run's devices must neither be frozen by them nor mistake them for their own."""
    env = {**os.environ, "COLUMNS": "160"}
    with MosquittoBroker(tmp_path / "broker", persistence=True) as broker:
        for run in ("first", "second"):
            done = subprocess.run(
                [sys.executable, "-m", "cloud.cli", "demo", "--devices", "2", "--inferences", "20",
                 "--mqtt-url", broker.url, "--data-dir", str(tmp_path / run)],
                capture_output=True, text=True, timeout=240, env=env,
            )
            out = done.stdout + done.stderr
            assert done.returncode == 0, f"{run} run:\n{out}"
            assert "all devices active" in out, f"{run} run:\n{out}"
