"""`edgefleet keys init|show|rotate|revoke`: the fleet's signing keys and the root versions naming them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_DIR = Path(".edgefleet/keys")


def register(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser("keys", help="create, inspect, rotate and revoke signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    init = keys_sub.add_parser("init", help="create the root, targets and director keys (root version 1)")
    init.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="key directory")
    init.add_argument("--fleet", help="fleet name (a-z 0-9 -); default: a random fleet-xxxxxx")
    init.add_argument("--force", action="store_true", help="overwrite existing keys")
    init.set_defaults(func=_keys_init)
    show = keys_sub.add_parser("show", help="print the fleet, the root version and every key by role")
    show.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    show.add_argument("--json", action="store_true", help="print JSON (fleet, root_version, keys) instead")
    show.set_defaults(func=_keys_show)
    rotate = keys_sub.add_parser("rotate", help="replace a role's key in a new root version")
    rotate.add_argument("--role", required=True, choices=("root", "targets", "director"))
    rotate.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    rotate.set_defaults(func=_keys_rotate)
    revoke = keys_sub.add_parser("revoke", help="refuse a key from a new root version on (replacing it if current)")
    revoke.add_argument("key_id", help="the key id, as `keys show` prints it")
    revoke.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    revoke.set_defaults(func=_keys_revoke)


def _run(args: argparse.Namespace, action: str) -> int:
    from cloud.errors import CloudError
    from cloud.registry.keys import CHAIN_FILE, KeyStore

    store = KeyStore(args.dir)
    try:
        if action == "init":
            store.init(args.fleet, overwrite=args.force)
        elif action == "rotate":
            print(f"new {args.role} key {store.rotate(args.role)}")
        elif action == "revoke":
            store.revoke(args.key_id)
            print(f"revoked {args.key_id}")
        _print_keys(store, as_json=getattr(args, "json", False))
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if action == "init":
        print(f"pin {args.dir / CHAIN_FILE} on every device (edgefleet-agent provision --trust ...); "
              f"keep {args.dir / 'root.key'} offline")
    elif action != "show":
        print("a running `edgefleet up` publishes the new root version to the fleet within a minute")
    return 0


def _keys_init(args: argparse.Namespace) -> int:
    return _run(args, "init")


def _keys_show(args: argparse.Namespace) -> int:
    return _run(args, "show")


def _keys_rotate(args: argparse.Namespace) -> int:
    return _run(args, "rotate")


def _keys_revoke(args: argparse.Namespace) -> int:
    return _run(args, "revoke")


def _print_keys(store: object, *, as_json: bool = False) -> None:
    from cloud.registry.keys import KeyStore

    assert isinstance(store, KeyStore)
    latest = store.latest()
    if as_json:
        keys = [{"role": k.role, "key_id": k.key_id} for k in sorted(latest.keys, key=lambda k: (k.role, k.key_id))]
        print(json.dumps({"fleet": latest.fleet, "root_version": latest.version, "directory": str(store.directory),
                          "keys": keys, "revoked_key_ids": list(latest.revoked_key_ids)}, indent=2))  # fmt: skip
        return
    print(f"fleet {latest.fleet}, root version {latest.version}  ({store.directory})")
    for key in sorted(latest.keys, key=lambda k: (k.role, k.key_id)):
        print(f"  {key.role:<9} {key.key_id}")
    if latest.revoked_key_ids:
        print(f"  revoked   {', '.join(latest.revoked_key_ids)}")
