"""`edgefleet experiment start|status|list|promote|stop`: A/B experiments through the console API (a
client of a running cloud, with the token as for `deploy`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cloud.cli.remote import DEFAULT_API, add_client_args, api_call, labels_of, split_ids


def register(subparsers: argparse._SubParsersAction) -> None:
    experiment = subparsers.add_parser("experiment", help="A/B experiments: two versions on a split of the fleet")
    actions = experiment.add_subparsers(dest="experiment_command", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="run version A and version B side by side on a stable split")
    start.add_argument("model_id")
    start.add_argument("--a", required=True, dest="version_a", help="version A (usually the current one)")
    start.add_argument("--b", required=True, dest="version_b", help="version B (the challenger)")
    start.add_argument("--devices", default="", help="comma-separated device ids")
    start.add_argument("--label", action="append", default=[], help="KEY=VALUE device label selector")
    start.add_argument("--share-b", type=float, default=0.5, help="share of the devices on B (default 0.5)")
    start.add_argument("--metric", choices=("accuracy", "error_rate"), default="accuracy")
    start.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    start.add_argument("--min-trials", type=int, default=100, help="per arm, before a winner may be named")
    start.set_defaults(func=_start)
    status = actions.add_parser("status", help="per-arm results with 95 %% intervals")
    status.add_argument("experiment_id")
    status.set_defaults(func=_status)
    listing = actions.add_parser("list", help="the newest experiments")
    listing.set_defaults(func=_list)
    promote = actions.add_parser("promote", help="deploy the winner (or --arm) to every device of the experiment")
    promote.add_argument("experiment_id")
    promote.add_argument("--arm", choices=("a", "b"), help="promote this arm even without a significant winner")
    promote.set_defaults(func=_promote)
    stop = actions.add_parser("stop", help="end it; each device keeps its arm's version")
    stop.add_argument("experiment_id")
    stop.set_defaults(func=_stop)
    for parser in (start, status, listing, promote, stop):
        parser.add_argument("--api", default=DEFAULT_API, help=f"console API (default {DEFAULT_API})")
        parser.add_argument("--json", action="store_true", help="print the API's JSON answer")
        add_client_args(parser)


def summary(experiment: dict[str, Any]) -> list[str]:
    lines = [f"experiment {experiment['id']}: {experiment['model_id']}, {experiment['metric']}, {experiment['state']}"
             + (f", winner {experiment['winner']}" if experiment["winner"] else "")]  # fmt: skip
    for arm in experiment["arms"]:
        rate = "-" if arm["rate"] is None else f"{arm['rate']:.4f}"
        interval = "" if arm["interval"] is None else f" [{arm['interval'][0]:.4f}, {arm['interval'][1]:.4f}]"
        lines.append(f"  {arm['arm']}: v{arm['version']:<8} {arm['assigned']:>5} devices  {arm['trials']:>9} trials  "
                     f"{rate}{interval}")  # fmt: skip
    p = experiment["p_value"]
    leader = experiment["leader"]
    lines.append(f"  p = {'-' if p is None else f'{p:.3g}'}: "
                 + (f"{leader} is significantly better" if leader else "no significant difference yet"))  # fmt: skip
    return lines


def _print(args: argparse.Namespace, experiment: Any) -> int:
    if args.json:
        print(json.dumps(experiment, indent=2))
    elif isinstance(experiment, list):
        if not experiment:
            print("no experiment yet (edgefleet experiment start MODEL --a V1 --b V2 --label KEY=VALUE)")
        for item in experiment:
            print("\n".join(summary(item)))
    else:
        print("\n".join(summary(experiment)))
    return 0


def _start(args: argparse.Namespace) -> int:
    body = {"model_id": args.model_id, "version_a": args.version_a, "version_b": args.version_b,
            "device_ids": split_ids(args.devices), "labels": labels_of(args.label), "share_b": args.share_b,
            "metric": args.metric, "alpha": args.alpha, "min_trials": args.min_trials}  # fmt: skip
    return _print(args, api_call(args, "POST", f"{args.api}/api/v1/experiments", json_body=body))


def _status(args: argparse.Namespace) -> int:
    return _print(args, api_call(args, "GET", f"{args.api}/api/v1/experiments/{args.experiment_id}"))


def _list(args: argparse.Namespace) -> int:
    return _print(args, api_call(args, "GET", f"{args.api}/api/v1/experiments"))


def _promote(args: argparse.Namespace) -> int:
    url = f"{args.api}/api/v1/experiments/{args.experiment_id}/promote"
    return _print(args, api_call(args, "POST", url, json_body={"arm": args.arm}))


def _stop(args: argparse.Namespace) -> int:
    return _print(args, api_call(args, "POST", f"{args.api}/api/v1/experiments/{args.experiment_id}/stop"))
