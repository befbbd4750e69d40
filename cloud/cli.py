"""The `edgefleet` command. Each part registers its own subcommands; heavy imports happen inside the
handlers, so `edgefleet agent ...` works on a device that has only the `agent` extra installed."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# module providing `register(subparsers)` for each group of subcommands, in help order
SUBCOMMAND_MODULES = [
    "cloud.commands",  # keys, up, demo, deploy, devices
    "model_compiler.cli",  # compile
    "edge_agent.cli",  # agent run / agent provision
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


if __name__ == "__main__":
    sys.exit(main())
