"""`edgefleet broker-config`: write a production Mosquitto's config for this fleet (cloud.identity.broker_config)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser("broker-config", help="write a Mosquitto config: TLS, CA, passwords, per-device ACL")
    cmd.add_argument("--out", required=True, type=Path, help="folder to write (mosquitto -c OUT/mosquitto.conf)")
    cmd.add_argument("--host", action="append", default=[], help="a host name or address devices dial (repeatable)")
    cmd.add_argument("--tls-port", type=int, default=8883)
    cmd.add_argument("--local-plain-port", type=int, help="also listen unencrypted on 127.0.0.1 (a cloud on this host)")
    cmd.add_argument("--refresh", action="store_true", help="rewrite passwd and acl only (after enrolling or revoking)")
    cmd.add_argument("--data-dir", type=Path, help="the same data dir as `edgefleet up` (default .edgefleet)")
    cmd.add_argument("--database-url", help="the same database as `edgefleet up`")
    cmd.set_defaults(func=_broker_config)


def _broker_config(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from cloud.db import create_tables, make_engine
    from cloud.errors import CloudError
    from cloud.identity.broker_config import BrokerConfig
    from cloud.identity.enrollment import live_password_hashes
    from cloud.registry.keys import KeyStore
    from cloud.settings import CloudSettings

    overrides = {"data_dir": args.data_dir, "database_url": args.database_url}
    settings = CloudSettings(**{k: v for k, v in overrides.items() if v is not None})
    assert settings.keys_dir is not None
    hosts = tuple(args.host or ["localhost"])
    try:
        fleet = KeyStore(settings.keys_dir).fleet
        engine = make_engine(settings.database)
        create_tables(engine)
        with Session(engine) as session:
            devices = live_password_hashes(session)
        config = BrokerConfig(args.out.resolve(), fleet, hosts, args.tls_port, args.local_plain_port)
        password = config.write(devices, refresh=args.refresh)
    except (CloudError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"fleet {fleet}: {len(devices)} device(s) may connect; wrote {config.directory}")
    if password is not None:
        print(f"run: mosquitto -c {config.conf_path}   (let the mosquitto user own {config.directory})")
        print(f"the cloud connects with the settings in {config.directory / 'cloud.env'} (mode 0600)")
        print(f"devices pin {config.directory / 'ca.crt'} (edgefleet-agent provision --tls-ca ...)")
    else:
        print("now reload the broker (kill -HUP its pid, or systemctl reload mosquitto)")
    return 0
