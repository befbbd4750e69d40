"""The device's command: `edgefleet-agent run|provision|bundle`, also reachable as `edgefleet agent ...`.

`main` is the `edgefleet-agent` console script, so a device never imports `cloud`; `register` lets the
cloud's `edgefleet` command offer the same subcommands. Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_BROKER_WARNING_AFTER_S = 10.0
_STALL_LIMIT_MIN_S = 5.0  # a loop stuck this long (or half WatchdogSec, if longer) counts as hung


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, measuring the terminal without shutil: argparse imports shutil (and with it bz2
    and lzma, ~1 MB resident for the agent's lifetime) for its width, in every add_argument."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _terminal_columns() -> int:
    import os

    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError):
        return 80


def build_parser() -> argparse.ArgumentParser:
    description = "Run or provision an EdgeFleet device agent."
    parser = argparse.ArgumentParser(prog="edgefleet-agent", description=description, formatter_class=HelpFormatter)
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
    agent = subparsers.add_parser("agent", help="run or provision the device agent", formatter_class=HelpFormatter)
    commands = agent.add_subparsers(dest="agent_command", metavar="AGENT_COMMAND", required=True)
    _add_commands(commands)


def _add_commands(commands: Any) -> None:
    run = commands.add_parser("run", help="run the agent until SIGINT/SIGTERM", formatter_class=HelpFormatter)
    run.add_argument("--config", required=True, type=Path, help="TOML file written by `agent provision`")
    run.set_defaults(func=run_command)

    provision = commands.add_parser(
        "provision", help="write a device's config file and pin the fleet's trust chain",
        description="Either spend an enrollment token (--token, --cloud-url; everything else comes from the cloud) "
                    "or give the broker and trust chain yourself (--mqtt-url, --trust).",
        formatter_class=HelpFormatter,
    )  # fmt: skip
    provision.add_argument("--device-id", required=True)
    provision.add_argument("--token", help="enrollment token from `edgefleet devices enroll` (single use)")
    provision.add_argument("--cloud-url", help="the console API the token is for, e.g. https://cloud.example:8080")
    provision.add_argument("--cloud-ca", type=Path, help="CA certificate to verify an https --cloud-url")
    provision.add_argument("--mqtt-url", help="mqtt://host:1883 or mqtts://host:8883 (with --token: overrides "
                                              "the URL the cloud names)")
    provision.add_argument("--trust", type=Path, help="trust.chain from `edgefleet keys init` (with --token: "
                                                      "the chain the cloud sends must start from the same root)")
    provision.add_argument("--state-dir", required=True, type=Path)
    provision.add_argument("--out", required=True, type=Path, help="config file to write (trust.chain goes beside it)")
    provision.add_argument("--mqtt-username")
    provision.add_argument("--mqtt-password")
    provision.add_argument("--tls-ca", type=Path)
    provision.add_argument("--grpc-address", help="host:port of the local inference API ('' disables it)")
    provision.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="device label")
    provision.add_argument("--force", action="store_true", help="overwrite an existing config file")
    provision.set_defaults(func=provision_command)

    bundle = commands.add_parser(
        "bundle", help="build an offline install tarball for a device (wheels, install.sh, systemd unit)",
        description="Build, on any machine with PyPI access, a tarball that installs the agent on a device "
                    "with no network: copy it over, unpack, `sudo ./install.sh`.",
        formatter_class=HelpFormatter,
    )  # fmt: skip
    bundle.add_argument("--arch", required=True, choices=["aarch64", "x86_64"], help="the device's CPU")
    bundle.add_argument("--python", default="3.11", help="the device's python3 version (default 3.11)")
    bundle.add_argument("--runtime", default="both", choices=["onnx", "litert", "both"],
                        help="inference runtime(s) to include (default both)")
    bundle.add_argument("--out", required=True, type=Path, help="tarball to write, e.g. edgefleet-pi.tar.gz")
    bundle.add_argument("--source", type=Path, help="EdgeFleet checkout to build the agent wheel from "
                                                    "(default: the one this command runs from)")
    bundle.add_argument("--wheel-cache", type=Path, help="keep downloaded wheels here, keyed by their inputs")
    bundle.set_defaults(func=bundle_command)


def bundle_command(args: argparse.Namespace) -> int:
    from edge_agent.bundle import BundleError, BundleSpec, build_bundle, checkout_root

    source = args.source or checkout_root()
    if source is None:
        print("error: not running from an EdgeFleet checkout; pass --source DIR", file=sys.stderr)
        return 1
    try:
        spec = BundleSpec(arch=args.arch, python=args.python, runtime=args.runtime)
        out = build_bundle(spec, args.out.resolve(), source=source.resolve(), wheel_cache=args.wheel_cache)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); on the device: tar xzf {out.name} && "
          f"sudo ./{spec.name}/install.sh")
    return 0


def provision_command(args: argparse.Namespace) -> int:
    """Exit 0 on success; 1 for a local problem (file exists, bad value or chain); 2 when enrollment with
    the cloud fails (token refused, cloud unreachable, an answer that is not an enrollment)."""
    from edge_agent.errors import ConfigError, EnrollmentError

    out: Path = args.out.resolve()
    if out.exists() and not args.force:
        print(f"error: {out} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    try:
        if args.token is not None:
            return _provision_by_token(args, out)
        return _provision_by_hand(args, out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except EnrollmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _common_values(args: argparse.Namespace, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "device_id": args.device_id,
        "state_dir": str(args.state_dir.resolve()),
        "grpc_address": args.grpc_address,
        "labels": labels or None,
    }


def _read_chain(path: Path) -> bytes:
    from edge_agent.errors import ConfigError
    from edge_agent.provision import chain_fleet

    try:
        chain = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the trust chain {path}: {exc.strerror or exc}") from None
    chain_fleet(chain, str(path))
    return chain


def _provision_by_hand(args: argparse.Namespace, out: Path) -> int:
    from edge_agent.errors import ConfigError
    from edge_agent.provision import chain_fleet, parse_labels, write_device_files

    if args.cloud_url is not None or args.cloud_ca is not None:
        raise ConfigError("--cloud-url and --cloud-ca go with --token")
    if args.mqtt_url is None or args.trust is None:
        raise ConfigError("give --token and --cloud-url (enrollment), or --mqtt-url and --trust")
    chain = _read_chain(args.trust)
    values = {
        **_common_values(args, parse_labels(args.label)),
        "mqtt_url": args.mqtt_url,
        "mqtt_username": args.mqtt_username,
        "mqtt_password": args.mqtt_password,
        "tls_ca": str(args.tls_ca.resolve()) if args.tls_ca else None,
    }
    chain_path = write_device_files(out, values, chain)
    print(f"wrote {out} and {chain_path} (fleet {chain_fleet(chain, str(args.trust))})")
    return 0


def _provision_by_token(args: argparse.Namespace, out: Path) -> int:
    from edge_agent.config import load_settings
    from edge_agent.enroll import enroll
    from edge_agent.errors import ConfigError, EnrollmentError
    from edge_agent.provision import chain_fleet, parse_labels, same_root, write_device_files

    if args.cloud_url is None:
        raise ConfigError("--token needs --cloud-url (the console API that issued it)")
    if args.mqtt_username is not None or args.mqtt_password is not None:
        raise ConfigError("with --token the broker credentials come from the cloud: drop --mqtt-username/--password")
    labels = parse_labels(args.label)
    pinned = _read_chain(args.trust) if args.trust is not None else None
    # check here what can be checked before the token is spent: it works once
    local = {**_common_values(args, labels), "mqtt_url": args.mqtt_url or "mqtt://localhost:1883"}
    load_settings(**{k: v for k, v in local.items() if v is not None})
    answer = enroll(args.cloud_url, args.token, args.device_id, cloud_ca=args.cloud_ca)
    try:
        fleet = chain_fleet(answer.trust_chain, f"the trust chain from {args.cloud_url}")
    except ConfigError as exc:
        raise EnrollmentError(str(exc)) from None
    if pinned is not None and not same_root(answer.trust_chain, pinned):
        raise EnrollmentError(f"the cloud's trust chain does not start from the root in {args.trust}; not using it")
    values = {
        **_common_values(args, {**labels, **answer.labels}),  # the operator's labels win, as in the cloud
        "mqtt_url": args.mqtt_url or answer.mqtt_url,
        "mqtt_username": answer.username,
        "mqtt_password": answer.password,
        "tls_ca": str(args.tls_ca.resolve()) if args.tls_ca else None,
    }
    try:
        chain_path = write_device_files(
            out, values, answer.trust_chain, tls_ca_pem=answer.tls_ca if args.tls_ca is None else None
        )
    except ConfigError as exc:  # e.g. a broker URL from the cloud that the agent cannot use
        raise EnrollmentError(f"the enrollment cannot be used: {exc}") from None
    print(f"enrolled {answer.device_id} in fleet {fleet}; wrote {out} (credentials, mode 0600) and {chain_path}")
    return 0


def run_command(args: argparse.Namespace) -> int:
    import signal
    import threading
    import time

    from edge_agent.resources import limit_malloc_arenas, use_builtin_hashes

    use_builtin_hashes()  # before the agent's modules import hashlib
    from edge_agent.agent import Agent
    from edge_agent.config import load_settings
    from edge_agent.connect import transport_for
    from edge_agent.errors import AgentError
    from edge_agent.sdnotify import Notifier
    from edge_agent.serving.grpc_server import start_grpc_server
    from edge_agent.transport import TransportError

    limit_malloc_arenas()  # before any thread starts (the systemd unit sets MALLOC_ARENA_MAX itself)
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
    systemd = Notifier()
    try:
        agent.start()
        if settings.grpc_address:
            grpc_server = start_grpc_server(agent, settings.grpc_address)
            host = settings.grpc_address.rpartition(":")[0]
            print(f"local inference API (gRPC) on {host}:{grpc_server.port}", flush=True)
        print(f"agent {settings.device_id} running (Ctrl-C to stop)", flush=True)
        systemd.ready(f"agent {settings.device_id} running")
        started, warned = time.monotonic(), False
        # the loop wakes at least as often as systemd's watchdog wants a ping, and pings only while the agent's
        # own loop steps: a hung step (a deadlock, a call that never returns) then gets the agent restarted
        tick = min(1.0, systemd.watchdog_interval_s or 1.0)
        stall_limit_s = max(systemd.watchdog_interval_s or 0.0, _STALL_LIMIT_MIN_S)
        stalled = False
        while not stopping.wait(tick):
            if agent.loop_stalled_s() < stall_limit_s:
                systemd.watchdog()
                stalled = False
            elif not stalled:
                stalled = True
                print(f"error: the agent's loop has not stepped for {agent.loop_stalled_s():.0f} s; no more "
                      "watchdog pings (systemd restarts the agent)", file=sys.stderr, flush=True)  # fmt: skip
            # Say so, once, when the broker stays out of reach: paho keeps retrying quietly in the background.
            if not warned and not transport.connected and time.monotonic() - started > _BROKER_WARNING_AFTER_S:
                warned = True
                print(f"warning: cannot reach the MQTT broker {settings.mqtt_url} yet "
                      f"({transport.last_error or 'no answer'}); still trying", file=sys.stderr, flush=True)
    except (AgentError, TransportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        systemd.stopping()
        if grpc_server is not None:
            grpc_server.stop()
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
