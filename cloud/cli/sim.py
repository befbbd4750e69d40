"""`edgefleet sim run SCENARIO.toml`: play a simulation scenario (simulator.scenario) against a cloud on
this machine, with live progress, then a report: a table per group and the whole report as JSON."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    sim = subparsers.add_parser("sim", help="simulated fleets: run a scenario file")
    commands = sim.add_subparsers(dest="sim_command", metavar="COMMAND", required=True)
    run = commands.add_parser("run", help="run SCENARIO.toml and report (see examples/scenarios/)")
    run.add_argument("scenario", type=Path, help="the scenario file (TOML)")
    run.add_argument("--data-dir", type=Path, help="where to keep the run's data (default: a new temp dir)")
    run.add_argument("--mqtt-url", help="use this broker instead of the embedded one")
    run.add_argument("--database-url", help="use this database instead of SQLite")
    run.add_argument("--json", dest="json_path", help="write the JSON report here ('-': print it; default: "
                     "report.json in the data dir)")  # fmt: skip
    run.set_defaults(func=run_sim)


def run_sim(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cloud.errors import CloudError
    from simulator.scenario import ScenarioError, load_scenario
    from simulator.scenario_run import run_scenario

    console = Console(stderr=args.json_path == "-")
    if not console.is_terminal:
        console.width = max(console.width, 120)  # piped output: don't squeeze the table into 80 columns
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    data_dir = (args.data_dir or Path(tempfile.mkdtemp(prefix="edgefleet-sim-"))).resolve()
    console.print(f"scenario [bold]{scenario.scenario.name}[/]: {scenario.size} devices, "
                  f"{scenario.scenario.duration_s:g}s; data in {data_dir}")  # fmt: skip
    try:
        with console.status("starting") as status:

            def progress(line: str) -> None:
                status.update(line)
                if not console.is_terminal:
                    console.print(line, highlight=False)

            report = run_scenario(scenario, data_dir=data_dir, mqtt_url=args.mqtt_url,
                                  database_url=args.database_url, progress=progress)  # fmt: skip
    except (ScenarioError, CloudError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2 if isinstance(exc, ScenarioError) else 1

    table = Table(title=f"{report.scenario}: model v{report.version}, rollout "
                        + (f"{report.rollout_s:.1f}s" if report.rollout_s is not None else "not complete"))  # fmt: skip
    for column in ("group", "network", "devices", "running", "failed", "p50/p95 s", "inferences", "errors",
                   "accuracy", "drift", "disconnects", "crashes"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("group", "network", "drift") else "right")
    for g in report.groups:
        table.add_row(g.name, g.network or "-", str(g.devices), str(g.running_deployed), str(g.failed),
                      _times(g.updates), str(g.inferences), str(g.errors),
                      "-" if g.accuracy is None else f"{g.accuracy:.3f}", "yes" if g.drifted else "no",
                      str(g.disconnects + g.link_drops), str(g.crashes))  # fmt: skip
    console.print(table)
    if any(g.network for g in report.groups):
        links = Table(title="updates per network profile")
        for column in ("network", "targeted", "updated", "failed", "under way", "p50/p95 s", "reasons"):
            links.add_column(column, justify="left" if column in ("network", "reasons") else "right")
        for name, u in report.networks.items():
            reasons = ", ".join(f"{code} x{n}" for code, n in sorted(u.reasons.items())) or "-"
            links.add_row(name, str(u.targeted), str(u.updated), str(u.failed), str(u.pending), _times(u), reasons)
        console.print(links)
    if report.accuracy_windows:
        flow = report.labels
        late = f"; delayed labels: {flow.delivered} delivered, {flow.owed} still owed" if flow.queued else ""
        heading = f"field accuracy per window (the cloud's, from sampled predictions and their labels{late}):"
        console.print(heading, highlight=False)
        for w in report.accuracy_windows:
            accuracy = "-" if w.accuracy is None else f"{w.accuracy:.3f} [{w.low:.3f}, {w.high:.3f}]"
            console.print(f"  t={w.start_s:6.1f}s  labelled {w.labelled:5d}  accuracy {accuracy}", highlight=False)
    for device_id, reason in sorted(report.failures.items()):
        console.print(f"  [red]{device_id}[/]: {reason}", highlight=False)
    payload = json.dumps(report.to_json(), indent=2)
    if args.json_path == "-":
        print(payload)
    else:
        path = Path(args.json_path) if args.json_path else data_dir / "report.json"
        path.write_text(payload + "\n")
        console.print(f"report: {path}")
    return 1 if report.failures else 0


def _times(updates: object) -> str:
    p50, p95 = getattr(updates, "update_p50_s", None), getattr(updates, "update_p95_s", None)
    return "-" if p50 is None else f"{p50:.1f} / {p95:.1f}"
