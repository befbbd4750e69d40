"""`edgefleet rollout plan|start|status|list|pause|resume|cancel|rollback`: staged rollouts through the
console API (like `deploy`, a client of a running cloud; the token as for `deploy`).

`plan` prints which device goes in which wave and which are skipped and why, writing nothing; `start`
begins the rollout (its first wave opens at once) and with `--wait` follows it to its end, one line per
change, exiting 0 when it completed and 1 when it was rolled back, cancelled or left paused.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
import time
from typing import Any

from cloud.cli.remote import DEFAULT_API, add_client_args, api_call, labels_of, split_ids
from cloud.cli.tables import Column, print_rows

ACTIONS = ("pause", "resume", "cancel", "rollback")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
# why the planner left a device out (cloud.rollout.waves.SkipReason), in words
SKIP_REASONS = {
    "no_runtime": "has none of the runtimes the release's artifacts need",
    "wrong_arch": "wrong CPU architecture for the release's artifacts",
    "agent_too_old": "its agent is older than the release needs",
    "offline": "offline (left out by --skip-offline)",
}
SHOWN_PER_WAVE = 40  # ids printed per wave; --json lists them all


def register(subparsers: argparse._SubParsersAction) -> None:
    rollout = subparsers.add_parser("rollout", help="staged, quality-gated rollouts: plan, start, follow, steer")
    actions = rollout.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)
    plan = actions.add_parser("plan", help="show the waves a rollout would get (writes nothing)")
    start = actions.add_parser("start", help="start a staged rollout; its first wave opens at once")
    for parser in (plan, start):
        add_target_args(parser)
    start.add_argument("--dry-run", action="store_true", help="print the plan (as `rollout plan`), start nothing")
    start.add_argument("--wait", action="store_true", help="follow the rollout until it ends")
    start.add_argument("--timeout", type=duration_s, default=24 * 3600.0, help="give up waiting after this")
    plan.set_defaults(func=_plan)
    start.set_defaults(func=_start)
    status = actions.add_parser("status", help="one rollout: waves, gates, decisions")
    status.add_argument("rollout_id")
    status.set_defaults(func=_status)
    listing = actions.add_parser("list", help="the newest rollouts")
    listing.set_defaults(func=_list)
    steering = []
    for action in ACTIONS:
        parser = actions.add_parser(action, help=f"{action} a rollout")
        parser.add_argument("rollout_id")
        parser.set_defaults(func=_steer, action=action)
        steering.append(parser)
    for parser in (plan, start, status, listing, *steering):
        parser.add_argument("--api", default=DEFAULT_API, help=f"console API (default {DEFAULT_API})")
        parser.add_argument("--json", action="store_true", help="print the API's JSON answer")
        add_client_args(parser)


def add_target_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_id")
    parser.add_argument("--version", help="model version (default: the latest)")
    parser.add_argument("--devices", default="", help="comma-separated device ids")
    parser.add_argument("--label", "--to", action="append", default=[], help="KEY=VALUE device label selector")
    add_strategy_args(parser, default="canary")


def add_strategy_args(parser: argparse.ArgumentParser, *, default: str) -> None:
    """How to roll out: the strategy, its waves and the quality gates (shared with `edgefleet deploy`)."""
    parser.add_argument("--strategy", choices=("canary", "waves", "all_at_once"), default=default)
    parser.add_argument("--canary", type=float, default=0.05, help="first wave of a canary: a count, or a share < 1")
    parser.add_argument("--first-wave", type=float, default=0.1, help="first wave of waves: a count or a share")
    parser.add_argument("--growth", type=float, default=2.0, help="each wave this many times the one before")
    parser.add_argument("--dwell", type=duration_s, default=300.0, help="watch a passed wave this long (5m, 30s)")
    parser.add_argument("--share", type=float, help="roll out to only this share (0-1) of the targets")
    parser.add_argument("--skip-offline", action="store_true", help="leave offline devices out of the plan")
    parser.add_argument("--min-agent-version", default="", help="skip devices whose agent is older (e.g. 0.4.0)")
    parser.add_argument("--on-breach", choices=("rollback", "pause"), default="rollback")
    parser.add_argument("--max-error-rate", type=float, default=0.01)
    parser.add_argument("--max-p95-ratio", type=float, default=1.5)
    parser.add_argument("--min-p95-increase-us", type=float, default=250.0, help="and p95 grew by this many µs")
    parser.add_argument("--max-prediction-psi", type=float, default=0.25)
    parser.add_argument("--min-devices", type=int, default=1)
    parser.add_argument("--min-inferences", type=int, default=200)
    parser.add_argument("--max-wait", type=duration_s, default=3600.0, help="pause a wave without verdict after")


def duration_s(text: str) -> float:
    """'300', '30s', '5m', '2h', '1d' -> seconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 5m, 2h)")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "deployment": {"model_id": args.model_id, "version": args.version, "device_ids": split_ids(args.devices),
                       "labels": labels_of(args.label)},
        "rollout": {
            "strategy": args.strategy, "canary": args.canary, "first_wave": args.first_wave, "growth": args.growth,
            "dwell_s": args.dwell, "share": args.share, "include_offline": not args.skip_offline,
            "on_breach": args.on_breach, "max_wait_s": int(args.max_wait), "min_agent_version": args.min_agent_version,
            "gates": {"max_error_rate": args.max_error_rate, "max_p95_ratio": args.max_p95_ratio,
                      "min_p95_increase_us": args.min_p95_increase_us,
                      "max_prediction_psi": args.max_prediction_psi, "min_devices": args.min_devices,
                      "min_inferences": args.min_inferences},
        },
    }  # fmt: skip


def _plan(args: argparse.Namespace) -> int:
    plan = api_call(args, "POST", f"{args.api}/api/v1/rollouts/plan", json_body=request_body(args))
    if args.json:
        print(json.dumps(plan, indent=2))
    else:
        print("\n".join(plan_lines(plan, staged=args.strategy != "all_at_once")))
    return 0


def plan_lines(plan: dict[str, Any], *, staged: bool = True, width: int = 80) -> list[str]:
    """A plan for people: each wave's devices (offline ones marked: their wave waits for them), then every
    device left out and why. A plain deploy (staged=False) skips nobody: those devices would fail instead."""
    offline = set(plan.get("offline", []))
    planned = sum(len(w) for w in plan["waves"])
    lines = [
        f"{plan['model_id']} v{plan['version']}: {plan['targets']} target(s), {planned} in "
        f"{len(plan['waves'])} wave(s), {len(plan['skipped'])} {'skipped' if staged else 'cannot run it'}"
    ]
    for index, wave in enumerate(plan["waves"], 1):
        names = [f"{d} (offline)" if d in offline else d for d in wave[:SHOWN_PER_WAVE]]
        if len(wave) > SHOWN_PER_WAVE:
            names.append(f"... {len(wave) - SHOWN_PER_WAVE} more (--json lists all)")
        lines.append(f"wave {index}: {len(wave)} device(s)")
        lines += textwrap.wrap(", ".join(names), width, initial_indent="  ", subsequent_indent="  ",
                               break_long_words=False, break_on_hyphens=False)  # fmt: skip
    if offline:
        lines.append(f"{len(offline)} planned device(s) offline now: a wave waits for its own (or --skip-offline)")
    for device_id, reason in sorted(plan["skipped"].items()):
        lines.append(f"{'skipped' if staged else 'cannot run it'}: {device_id}")
        lines.append(f"  {SKIP_REASONS.get(reason, reason)}")
    return lines


def _start(args: argparse.Namespace) -> int:
    return start_rollout(args)


def start_rollout(args: argparse.Namespace) -> int:
    """Start a staged rollout from parsed target and strategy arguments (`rollout start`, `deploy --strategy`)."""
    if getattr(args, "dry_run", False):
        return _plan(args)
    rollout = api_call(args, "POST", f"{args.api}/api/v1/rollouts", json_body=request_body(args))
    if args.json and not args.wait:
        print(json.dumps(rollout, indent=2))
        return 0
    print(f"rollout {rollout['deployment_id']}: {rollout['model_id']} v{rollout['version']}, waves "
          f"{'+'.join(str(n) for n in rollout['wave_sizes'])}")  # fmt: skip
    if not args.wait:
        return 0
    return follow(args, rollout["deployment_id"], args.timeout)


def follow(args: argparse.Namespace, rollout_id: str, timeout_s: float, poll_s: float = 2.0) -> int:
    """Print a line whenever the rollout changes, until it ends (0: completed; 1: otherwise)."""
    deadline, last = time.monotonic() + timeout_s, ""
    while True:
        rollout = api_call(args, "GET", f"{args.api}/api/v1/rollouts/{rollout_id}")
        line = progress_line(rollout)
        if line != last:
            print(line, flush=True)
            last = line
        if rollout["state"] in ("completed", "rolled_back", "cancelled"):
            return 0 if rollout["state"] == "completed" else 1
        if rollout["state"] == "paused":
            print(f"paused: {rollout['reason']} (edgefleet rollout resume|rollback {rollout_id})", file=sys.stderr)
            return 1
        if time.monotonic() >= deadline:
            print(f"still {rollout['state']} after {timeout_s:.0f} s; follow it with `edgefleet rollout status "
                  f"{rollout_id}`", file=sys.stderr)  # fmt: skip
            return 1
        time.sleep(poll_s)


def progress_line(rollout: dict[str, Any]) -> str:
    waves = len(rollout["wave_sizes"])
    wave = f"wave {rollout['current_wave'] + 1}/{waves}" if rollout["current_wave"] >= 0 else "not started"
    verdict = rollout.get("last_verdict") or {}
    unsettled = [g for g in verdict.get("gates", []) if g["decision"] != "pass"]
    details = {g.get("detail", "") for g in unsettled}
    if unsettled and all(g["decision"] == "wait" for g in unsettled) and len(details) == 1 and "" not in details:
        gates = details.pop()  # every gate waits for the same evidence: say what it is, once
    else:
        gates = ", ".join(f"{g['gate']} {g['decision']}" for g in unsettled)
    return (f"{rollout['state']:<11} {wave:<11} done {rollout['devices_done']:>5} failed {rollout['devices_failed']:>4}"
            f"  {verdict.get('decision', '-')}{' (' + gates + ')' if gates else ''}")  # fmt: skip


def _status(args: argparse.Namespace) -> int:
    rollout = api_call(args, "GET", f"{args.api}/api/v1/rollouts/{args.rollout_id}")
    if args.json:
        print(json.dumps(rollout, indent=2))
        return 0
    kind = rollout["strategy"].get("kind", "?")
    print(f"rollout {rollout['deployment_id']}: {rollout['model_id']} v{rollout['version']} ({kind}, "
          f"on breach {rollout['on_breach']})")  # fmt: skip
    print(textwrap.fill(progress_line(rollout), 80, subsequent_indent="  ", break_on_hyphens=False))
    if rollout["reason"]:
        print(f"reason: {rollout['reason']}")
    gates = (rollout.get("last_verdict") or {}).get("gates", [])
    for gate in gates:
        value = "-" if gate["value"] is None else f"{gate['value']:.4g}"
        print(f"  {gate['gate']:<17} {gate['decision']:<6} {value:>8} (limit {gate['threshold']:.4g})")
        if gate.get("detail") and gate["decision"] != "pass":
            print(textwrap.fill(gate["detail"], 80, initial_indent="    ", subsequent_indent="    "))
    for decision in rollout["decisions"][-10:]:
        when = time.strftime("%H:%M:%S", time.localtime(decision["at_ms"] / 1000))
        print(f"  {when} wave {decision['wave'] + 1}: {decision['action']} by {decision['actor']}"
              + _rollback_outcome(decision))  # fmt: skip
    return 0


def _rollback_outcome(decision: dict[str, Any]) -> str:
    """What a rollback did, device by device: a device that ran no model before keeps the new one (there is
    nothing to go back to), which an operator should not have to find in the JSON."""
    detail = decision.get("detail") or {}
    if decision.get("action") != "rollback" or not isinstance(detail, dict) or "restored" not in detail:
        return ""
    parts = [f"{n} back on {model}" for model, n in sorted((detail.get("restored") or {}).items())]
    if detail.get("kept_new_model"):
        parts.append(f"{detail['kept_new_model']} kept the new model (none to go back to)")
    return ": " + ", ".join(parts) if parts else ""


def _list(args: argparse.Namespace) -> int:
    print_rows(api_call(args, "GET", f"{args.api}/api/v1/rollouts"), ROLLOUT_COLUMNS, as_json=args.json)
    return 0


def _wave(rollout: dict[str, Any]) -> str:
    return f"{rollout['current_wave'] + 1}/{len(rollout['wave_sizes'])}" if rollout["current_wave"] >= 0 else "-"


ROLLOUT_COLUMNS = [
    Column("rollout", lambda r: r["deployment_id"], key=True),
    Column("model", lambda r: r["model_id"], key=True),
    Column("version", lambda r: r["version"], key=True),
    Column("state", lambda r: r["state"], key=True),
    Column("wave", _wave, key=True),
    Column("done", lambda r: r["devices_done"]),
    Column("failed", lambda r: r["devices_failed"]),
]  # the gates' verdict: `rollout status ID`


def _steer(args: argparse.Namespace) -> int:
    rollout = api_call(args, "POST", f"{args.api}/api/v1/rollouts/{args.rollout_id}/{args.action}")
    if args.json:
        print(json.dumps(rollout, indent=2))
    else:
        print(f"rollout {rollout['deployment_id']}: {rollout['state']} ({rollout['reason']})")
    return 0
