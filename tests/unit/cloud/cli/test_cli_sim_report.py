"""`edgefleet sim run`'s report tables at 80 columns: every figure of every group is printed whole (the old
single table of twelve columns cut them to `…`), and no line is wider than the terminal."""

from __future__ import annotations

import io

from rich.console import Console

from cloud.cli.sim_report import print_report
from simulator.scenario_run import GroupReport, RunReport, UpdateSummary


def report() -> RunReport:
    slow = UpdateSummary(targeted=40, updated=37, failed=2, pending=1, update_p50_s=123.4, update_p95_s=987.6,
                         reasons={"CHUNK_TIMEOUT": 2, "DOWNLOAD_STALLED": 1})  # fmt: skip
    groups = [
        GroupReport(
            name="warehouse-north",
            devices=40,
            running_deployed=37,
            failed=2,
            inferences=1234567,
            errors=45678,
            accuracy=0.98765,
            disconnects=1200,
            crashes=345,
            drifted=True,
            network="rural-3g",
            updates=slow,
            link_drops=34,
        ),  # fmt: skip
        GroupReport(
            name="stores",
            devices=160,
            running_deployed=160,
            failed=0,
            inferences=7654321,
            errors=0,
            accuracy=None,
            disconnects=0,
            crashes=0,
            drifted=False,
        ),  # fmt: skip
    ]
    return RunReport(scenario="mixed-fleet", devices=200, version="20261203.1", duration_s=600, rollout_s=1234.5,
                     groups=groups, failures={}, networks={"rural-3g": slow})  # fmt: skip


def render(width: int) -> str:
    out = io.StringIO()
    print_report(report(), Console(file=out, width=width, color_system=None, legacy_windows=False))
    return out.getvalue()


def test_every_figure_is_whole_at_80_columns() -> None:
    text = render(80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "…" not in text, text
    for figure in ("1234567", "45678", "0.988", "1234", "345", "7654321", "123.4 / 987.6", "warehouse-north",
                   "rural-3g", "20261203.1", "1234.5s"):  # fmt: skip
        assert figure in text, f"{figure!r} missing or cut:\n{text}"
    # each group has a row in both tables: the updates one and the traffic one
    assert sum("stores" in line for line in lines) == 2, text
    # the reasons fold onto more lines rather than being cut
    assert "CHUNK_TIMEOUT x2," in text, text


def test_a_wide_terminal_keeps_one_line_per_row() -> None:
    lines = render(200).splitlines()
    assert sum("warehouse-north" in line for line in lines) == 2
    assert any("CHUNK_TIMEOUT x2, DOWNLOAD_STALLED x1" in line for line in lines)
