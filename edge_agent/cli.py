"""The device's command: `edgefleet-agent run|provision`, also reachable as `edgefleet agent run|provision`.

`main` is the `edgefleet-agent` console script, so a device never imports `cloud`; `register` lets the
cloud's `edgefleet` command offer the same subcommands. Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_BROKER_WARNING_AFTER_S = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgefleet-agent", description="Run or provision an EdgeFleet device agent.")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    commands = parser.add_subparsers(dest="agent_command", metavar="COMMAND")
    _add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `edgefleet-agent` console script."""
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


def register(subparsers: Any) -> None:
    """Add `agent run|provision` to another command's subparsers (the cloud's `edgefleet`)."""
    agent = subparsers.add_parser("agent", help="run or provision the device agent")
    commands = agent.add_subparsers(dest="agent_command", metavar="AGENT_COMMAND", required=True)
    _add_commands(commands)


def _add_commands(commands: Any) -> None:
    run = commands.add_parser("run", help="run the agent until SIGINT/SIGTERM")
    run.add_argument("--config", required=True, type=Path, help="TOML file written by `agent provision`")
    run.set_defaults(func=run_command)

    provision = commands.add_parser("provision", help="write a device's config file and pin the fleet's trust chain")
    provision.add_argument("--device-id", required=True)
    provision.add_argument("--mqtt-url", required=True, help="mqtt://host:1883 or mqtts://host:8883")
    provision.add_argument("--trust", required=True, type=Path, help="trust.chain from `edgefleet keys init`")
    provision.add_argument("--state-dir", required=True, type=Path)
    provision.add_argument("--out", required=True, type=Path, help="config file to write (trust.chain goes beside it)")
    provision.add_argument("--mqtt-username")
    provision.add_argument("--mqtt-password")
    provision.add_argument("--tls-ca", type=Path)
    provision.add_argument("--grpc-address", help="host:port of the local inference API ('' disables it)")
    provision.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="device label")
    provision.add_argument("--force", action="store_true", help="overwrite an existing config file")
    provision.set_defaults(func=provision_command)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def render_config(values: dict[str, Any]) -> str:
    lines = ["# EdgeFleet agent configuration (written by `edgefleet-agent provision`)."]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None]
    return "\n".join(lines) + "\n"


def provision_command(args: argparse.Namespace) -> int:
    import os

    from google.protobuf.message import DecodeError

    from edge_agent.config import load_settings
    from edge_agent.errors import ConfigError
    from edge_agent.store import write_atomically
    from protocols.roots import RootOfTrust
    from protocols.trust import VerificationError
    from protocols.v1 import messages_pb2 as pb

    out: Path = args.out.resolve()
    if out.exists() and not args.force:
        print(f"error: {out} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    try:
        chain = args.trust.read_bytes()
        fleet = RootOfTrust.from_chain(pb.TrustChain.FromString(chain)).fleet
    except OSError as exc:
        print(f"error: cannot read the trust chain {args.trust}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except (DecodeError, VerificationError) as exc:
        print(f"error: {args.trust} is not a valid trust chain (trust.chain): {exc}", file=sys.stderr)
        return 1
    labels: dict[str, str] = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"error: --label takes KEY=VALUE, got {item!r}", file=sys.stderr)
            return 1
        labels[key] = value
    values: dict[str, Any] = {
        "device_id": args.device_id,
        "mqtt_url": args.mqtt_url,
        "mqtt_username": args.mqtt_username,
        "mqtt_password": args.mqtt_password,
        "tls_ca": str(args.tls_ca.resolve()) if args.tls_ca else None,
        "trust_path": str(out.parent / "trust.chain"),
        "state_dir": str(args.state_dir.resolve()),
        "grpc_address": args.grpc_address,
        "labels": labels or None,
    }
    try:
        # validate before writing anything; explicit values here, not the environment's
        load_settings(**{k: v for k, v in values.items() if v is not None and k != "trust_path"})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out.parent / "trust.chain", chain, mode=0o644)
    write_atomically(out, render_config(values).encode(), mode=0o600 if args.mqtt_password else 0o644)
    os.chmod(out.parent / "trust.chain", 0o644)
    print(f"wrote {out} and {out.parent / 'trust.chain'} (fleet {fleet})")
    return 0


def run_command(args: argparse.Namespace) -> int:
    import signal
    import threading
    import time

    from edge_agent.agent import Agent
    from edge_agent.config import load_settings
    from edge_agent.connect import transport_for
    from edge_agent.errors import AgentError
    from edge_agent.serving.grpc_server import start_grpc_server
    from edge_agent.transport import TransportError

    try:
        settings = load_settings(args.config)
        transport = transport_for(settings)
        agent = Agent(settings, transport)
    except (AgentError, TransportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    grpc_server = None
    try:
        agent.start()
        if settings.grpc_address:
            grpc_server = start_grpc_server(agent, settings.grpc_address)
            host = settings.grpc_address.rpartition(":")[0]
            print(f"local inference API (gRPC) on {host}:{grpc_server.port}", flush=True)
        print(f"agent {settings.device_id} running (Ctrl-C to stop)", flush=True)
        started, warned = time.monotonic(), False
        while not stopping.wait(1.0):
            # Say so, once, when the broker stays out of reach: paho keeps retrying quietly in the background.
            if not warned and not transport.connected and time.monotonic() - started > _BROKER_WARNING_AFTER_S:
                warned = True
                print(f"warning: cannot reach the MQTT broker {settings.mqtt_url} yet "
                      f"({transport.last_error or 'no answer'}); still trying", file=sys.stderr, flush=True)
    except (AgentError, TransportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if grpc_server is not None:
            grpc_server.stop()
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
