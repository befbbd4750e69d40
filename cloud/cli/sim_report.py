"""How `edgefleet sim run` prints its report for people: tables that fit 80 columns. The report has a dozen
figures per group; one table of twelve columns cut them to `…` at 80, so they are two tables of at most
seven (how the update went; what the devices did), keyed by the group. Everything is in the JSON report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloud.cli.tables import compact_table

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from simulator.scenario_run import RunReport, UpdateSummary

LEFT = {"group", "network", "drift", "reasons"}


def print_report(report: RunReport, console: Console) -> None:
    rollout = f"{report.rollout_s:.1f}s" if report.rollout_s is not None else "not complete"
    console.print(f"[bold]{report.scenario}[/]: model v{report.version}, rollout {rollout}", highlight=False)
    if report.events_late_s >= 1.0:  # the machine could not keep up: faults and drift came later than written
        console.print(f"[yellow]timeline events fired up to {report.events_late_s:.1f}s late[/]", highlight=False)
    updates = _table("updates per group", ("group", "network", "devices", "running", "failed", "p50/p95 s"))
    traffic = _table("traffic per group", ("group", "inferences", "errors", "accuracy", "drift", "disconnects",
                                            "crashes"))  # fmt: skip
    for g in report.groups:
        updates.add_row(g.name, g.network or "-", str(g.devices), str(g.running_deployed), str(g.failed),
                        times(g.updates))  # fmt: skip
        traffic.add_row(g.name, str(g.inferences), str(g.errors), "-" if g.accuracy is None else f"{g.accuracy:.3f}",
                        "yes" if g.drifted else "no", str(g.disconnects + g.link_drops), str(g.crashes))  # fmt: skip
    console.print(updates)
    console.print(traffic)
    u = report.updates
    if u.targeted:  # the claim "every update completes when its link allows, or fails with a reason", checked
        ended = (f"updates: {u.updated} of {u.targeted} completed, {u.failed} failed with a reason, "
                 f"{u.pending - u.stalled} under way with a reason (link down, crashed)")  # fmt: skip
        stalled = f", [red]{u.stalled} stalled with the link up and no reason[/]" if u.stalled else ""
        console.print(ended + stalled, highlight=False)
    if any(g.network for g in report.groups):
        links = _table("updates per network profile",
                       ("network", "targeted", "updated", "failed", "under way", "p50/p95 s", "reasons"))  # fmt: skip
        for name, u in report.networks.items():
            reasons = ", ".join(f"{code} x{n}" for code, n in sorted(u.reasons.items())) or "-"
            links.add_row(name, str(u.targeted), str(u.updated), str(u.failed), str(u.pending), times(u), reasons)
        console.print(links)


def times(updates: UpdateSummary) -> str:
    p50, p95 = updates.update_p50_s, updates.update_p95_s
    return "-" if p50 is None or p95 is None else f"{p50:.1f} / {p95:.1f}"


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = compact_table(title)
    for column in columns:
        if column in LEFT:  # names and free text fold rather than end in "…"
            table.add_column(column, justify="left", overflow="fold")
        else:  # figures stay whole
            table.add_column(column, justify="right", no_wrap=True)
    return table
