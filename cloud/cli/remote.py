"""`edgefleet deploy|devices|models`: thin clients of a running cloud's console API (over HTTP).

They send an operator token: --token, else $EDGEFLEET_TOKEN, else the file `edgefleet up` wrote in
development (`<data_dir>/operator.token`; see cloud.cli.operator_token). HTTP is the standard library's
`urllib`: httpx is a test dependency only, and a user's `cloud` install does not have it.
`devices enroll|revoke` live in cloud.cli.enroll.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_API = "http://127.0.0.1:8080"


def register(subparsers: argparse._SubParsersAction) -> None:
    deploy = subparsers.add_parser("deploy", help="roll a model version out to devices")
    deploy.add_argument("model_id")
    deploy.add_argument("--version", help="model version (default: the latest)")
    deploy.add_argument("--devices", default="", help="comma-separated device ids")
    deploy.add_argument("--label", action="append", default=[], help="KEY=VALUE device label selector")
    deploy.add_argument("--api", default=DEFAULT_API, help=f"console API (default {DEFAULT_API})")
    deploy.set_defaults(func=_deploy)

    devices = subparsers.add_parser("devices", help="list devices and their state; enroll or revoke one")
    devices.add_argument("--api", default=DEFAULT_API)
    devices.set_defaults(func=_devices)
    from cloud.cli.enroll import register_device_actions

    register_device_actions(devices, add_client_args)

    models = subparsers.add_parser("models", help="list registered model versions")
    models.add_argument("--api", default=DEFAULT_API)
    models.set_defaults(func=_models)

    for parser in (deploy, devices, models):
        add_client_args(parser)


def add_client_args(parser: argparse.ArgumentParser, *, with_api: bool = False, **defaults: Any) -> None:
    """--token and --data-dir (and --api when with_api); `defaults` (e.g. default=argparse.SUPPRESS, so that a
    sub-command does not overwrite what its parent parsed) apply to each."""
    if with_api:
        parser.add_argument("--api", help=f"console API (default {DEFAULT_API})", **defaults)
    parser.add_argument("--token", help="operator API token (default: $EDGEFLEET_TOKEN, else the token "
                                        "file `edgefleet up` wrote in the data dir)", **defaults)
    parser.add_argument("--data-dir", type=Path, help="where to look for operator.token "
                                                      "(default: $EDGEFLEET_DATA_DIR or .edgefleet)", **defaults)


def _token(args: argparse.Namespace) -> str:
    from cloud.cli.operator_token import TOKEN_FILE, resolve_token

    data_dir = args.data_dir or Path(os.environ.get("EDGEFLEET_DATA_DIR", ".edgefleet"))
    token = resolve_token(args.token, data_dir)
    if token is None:
        print(f"error: no API token: pass --token or set EDGEFLEET_TOKEN (create one with `edgefleet tokens create "
              f"--name NAME --role deployer`; in development `edgefleet up` writes {data_dir / TOKEN_FILE})",
              file=sys.stderr)
        raise SystemExit(2)
    return token


def api_call(args: argparse.Namespace, method: str, url: str, *, json_body: object = None) -> Any:
    """The JSON answer of one console API call with the operator's token; SystemExit saying why not."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {_token(args)}", "Accept": "application/json"}
    data = None
    if json_body is not None:
        data, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10.0) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"error: {exc.code} {exc.read().decode(errors='replace')}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SystemExit(f"error: cannot reach the console API at {url}: {reason}") from None
    return json.loads(body) if body else None


def _deploy(args: argparse.Namespace) -> int:
    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --label takes KEY=VALUE, got {item!r}")
        labels[key] = value
    body = {
        "model_id": args.model_id,
        "version": args.version,
        "device_ids": [d for d in args.devices.split(",") if d],
        "labels": labels,
    }
    result: dict = api_call(args, "POST", f"{args.api}/api/v1/deployments", json_body=body)
    targets = ", ".join(t["device_id"] for t in result.get("targets", []))
    print(f"deployment {result['id']}: {result['model_id']} v{result['version']} -> {targets or '(no device)'}")
    return 0


def _print_table(rows: list[dict], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("-" if row.get(c) is None else str(row.get(c)) for c in columns))
    Console().print(table)


def _devices(args: argparse.Namespace) -> int:
    rows: list[dict] = api_call(args, "GET", f"{args.api}/api/v1/devices")
    _print_table(rows, ["id", "online", "active_model_id", "active_version", "update_state", "last_error_code",
                        "labels"])
    return 0


def _models(args: argparse.Namespace) -> int:
    rows: list[dict] = api_call(args, "GET", f"{args.api}/api/v1/models")
    _print_table(rows, sorted({k for row in rows for k in row}))
    return 0
