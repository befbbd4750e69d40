"""`edgefleet sim run` with delayed label feedback (embedded parts, 4 devices): devices predict without
labels, the labels of their sampled predictions go up as FeedbackBatch messages two seconds later, and the
report gives the cloud's field accuracy per window, which falls once the inputs drift."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SCENARIO = """
[scenario]
name = "late-labels"
duration_s = 14
seed = 2
telemetry_interval_s = 1
sample_rate = 0.5
accuracy_window_s = 5

[[groups]]
name = "field"
count = 4
data = { rate_hz = 8, label_delay_s = 2 }

[[events]]
at_s = 0
action = "deploy"

[[events]]
at_s = 2
action = "label_shift"
group = "field"
prior = { "1" = 4.0, "7" = 4.0 }

[[events]]
at_s = 7
action = "drift"
group = "field"
shift = 4.0
top = 8
"""


def test_delayed_labels_give_the_cloud_accuracy_per_window(tmp_path: Path) -> None:
    path = tmp_path / "late.toml"
    path.write_text(SCENARIO)
    report_path = tmp_path / "report.json"
    code = main(["sim", "run", str(path), "--data-dir", str(tmp_path / "run"), "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert code == 0, report["failures"]
    flow = report["labels"]
    assert flow["sampled"] > 40 and flow["queued"] > 0 and flow["delivered"] > 0
    assert flow["delivered"] + flow["owed"] == flow["queued"]  # every label either sent or still due
    assert flow["owed"] > 0  # predictions of the last two seconds: their labels are not due yet
    assert flow["stored_by_cloud"] == flow["delivered"]
    windows = report["accuracy_windows"]
    # the samples carry no label of their own: what the cloud labels is exactly what the feedback joined
    assert sum(w["labelled"] for w in windows) == flow["delivered"]
    assert len(windows) >= 3 and all(w["labelled"] > 0 for w in windows[:2])
    # windows start on multiples of 5 s of wall time: the first may begin before the timeline does
    before, after = windows[0], max((w for w in windows if w["labelled"] >= 20), key=lambda w: w["start_s"])
    assert after["start_s"] >= 5 and before["accuracy"] > after["accuracy"] + 0.1, windows
    kinds = " | ".join(what for _t, what in report["timeline"])
    assert "sudden label shift on field: 1: 4, 7: 4" in kinds
