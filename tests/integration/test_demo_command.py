"""`edgefleet demo` is the product's front door: it must run the whole loop and say what happened."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import Session, select
from support import MosquittoBroker, mosquitto_binary

from cloud.db import make_engine
from cloud.db.tables import Candidate
from cloud.registry import LocalArtifactStore, field_data
from cloud.settings import CloudSettings
from cloud.training.candidates import reference_split

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
    _assert_no_evaluation_row_was_trained_on(data_dir)


def _rows(X: object) -> set[str]:
    return {hashlib.sha256(np.asarray(row, dtype=np.float32).tobytes()).hexdigest() for row in X}  # type: ignore[attr-defined]


def _assert_no_evaluation_row_was_trained_on(data_dir: Path) -> None:
    """By content hash: the rows the challenger was judged on (reference held-out, field eval) are none of
    the rows it was fitted on (reference train, field train), and the devices drew from neither."""
    settings = CloudSettings(data_dir=data_dir)
    engine = make_engine(settings.database)
    store = LocalArtifactStore(settings.artifacts_dir)  # type: ignore[arg-type]
    try:
        with Session(engine) as session:
            candidate = session.exec(select(Candidate).where(Candidate.version == "2")).one()
            document = json.loads(store.get(candidate.id))
            field = {role: field_data.load(session, store, document["datasets"][role]).rows
                     for role in ("field_train", "field_eval")}  # fmt: skip
    finally:
        engine.dispose()
    reference = reference_split(document["recipe"])
    fitted = _rows(reference.X_train) | _rows(r.input for r in field["field_train"])
    judged_on = _rows(reference.X_test) | _rows(r.input for r in field["field_eval"])
    assert len(field["field_train"]) > 100 and len(field["field_eval"]) > 100
    assert not fitted & judged_on, f"{len(fitted & judged_on)} evaluation rows were trained on"
    assert not _rows(reference.X_pool) & (_rows(reference.X_train) | _rows(reference.X_test))


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
