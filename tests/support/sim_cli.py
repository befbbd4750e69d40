"""`edgefleet sim run` on a scenario written out by a test: its exit code, what it printed, its JSON report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloud.cli import main


def run_scenario_cli(tmp_path: Path, name: str, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, Any]:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    report_path = tmp_path / "report.json"
    code = main(["sim", "run", str(path), "--data-dir", str(tmp_path / "run"), "--json", str(report_path)])
    return code, capsys.readouterr().out, json.loads(report_path.read_text())
