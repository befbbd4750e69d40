"""`edgefleet keys init|show`: create the signing keys and print their ids and the delegation's expiry."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser("keys", help="create and inspect signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    init = keys_sub.add_parser("init", help="create a root key and a targets key delegated by it")
    init.add_argument("--dir", type=Path, default=Path(".edgefleet/keys"), help="key directory")
    init.add_argument("--valid-days", type=float, default=365.0, help="lifetime of the delegation")
    init.add_argument("--force", action="store_true", help="overwrite existing keys")
    init.set_defaults(func=_keys_init)
    show = keys_sub.add_parser("show", help="print the key ids and the delegation's expiry")
    show.add_argument("--dir", type=Path, default=Path(".edgefleet/keys"))
    show.set_defaults(func=_keys_show)


def _keys_init(args: argparse.Namespace) -> int:
    from cloud.errors import KeyStoreError
    from cloud.registry.keys import init_keys

    try:
        root_pub = init_keys(args.dir, valid_days=args.valid_days, overwrite=args.force)
    except KeyStoreError as exc:
        print(f"error: {exc}")
        return 1
    _print_keys(args.dir)
    print(f"pin {root_pub} on every device (edgefleet agent provision --root-key {root_pub}); "
          f"keep {args.dir / 'root.key'} offline")
    return 0


def _keys_show(args: argparse.Namespace) -> int:
    from cloud.errors import KeyStoreError

    try:
        _print_keys(args.dir)
    except KeyStoreError as exc:
        print(f"error: {exc}")
        return 1
    return 0


def _print_keys(directory: Path) -> None:
    import datetime as dt

    from cloud.registry.keys import load_root_public, load_signer
    from protocols.trust import key_id
    from protocols.v1 import messages_pb2 as pb

    signer = load_signer(directory)
    delegation = pb.KeyDelegation.FromString(signer.delegation.delegation)
    expiry = dt.datetime.fromtimestamp(delegation.not_after_ms / 1000, tz=dt.UTC)
    print(f"root key    {key_id(load_root_public(directory))}  ({directory / 'root.pub'})")
    print(f"targets key {signer.key_id}  delegated until {expiry:%Y-%m-%d %H:%M} UTC")
