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

    from cloud.cli.sim_report import print_report
    from cloud.errors import CloudError
    from simulator.scenario import ScenarioError, load_scenario
    from simulator.scenario_run import run_scenario

    console = Console(stderr=args.json_path == "-")
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    if args.mqtt_url is None and scenario.scenario.broker == "embedded":
        from cloud.mqtt.broker import embedded_broker_limit

        if (too_many := embedded_broker_limit(scenario.size)) is not None:
            console.print(f"[yellow]warning:[/] {too_many}, or broker = \"mosquitto\" in [scenario]",
                          highlight=False, soft_wrap=True)  # fmt: skip
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

    print_report(report, console)
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
