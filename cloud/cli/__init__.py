"""The `edgefleet` command (`main`). Each part registers its own subcommands; heavy imports happen inside
the handlers, so `edgefleet agent ...` works on a device that has only the `agent` extra installed.

The cloud's commands live one module per command group here: `keys`, `up`, `train`, `tokens`, `demo` (+
`demo_report`) and `remote` (deploy, devices, models: clients of a running cloud's API; they find the
token `up` wrote through `operator_token`), with `enroll` (devices enroll / revoke) and `rollout` (staged
rollouts: plan, start, follow, steer), `experiment` (A/B experiments) and `pipeline` (fleet datasets and
champion/challenger retraining, one step per command).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# module providing `register(subparsers)` for each group of subcommands, in help order
SUBCOMMAND_MODULES = [
    "cloud.cli.keys",  # keys init / keys show
    "cloud.cli.up",  # up
    "cloud.cli.train",  # train
    "cloud.cli.pipeline",  # data snapshot / list, pipeline check / snapshot / retrain / promote / aliases
    "cloud.cli.tokens",  # tokens create / list / revoke
    "cloud.cli.demo",  # demo
    "cloud.cli.sim",  # sim run
    "cloud.cli.remote",  # deploy, devices, models
    "cloud.cli.rollout",  # rollout plan / start / status / list / pause / resume / cancel / rollback
    "cloud.cli.experiment",  # experiment start / status / list / promote / stop
    "cloud.cli.broker",  # broker-config
    "model_compiler.cli",  # compile
    "edge_agent.cli",  # agent run / agent provision / agent bundle
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefleet", description="Put ML models on fleets of small Linux devices and watch them there."
    )
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`edgefleet rollout list --json | head`): as any Unix tool, end quietly;
        # stdout goes to devnull so the interpreter's flush at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
