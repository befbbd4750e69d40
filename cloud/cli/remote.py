"""`edgefleet deploy|devices|models`: thin clients of a running cloud's console API (over HTTP).

They send an operator token: --token, else $EDGEFLEET_TOKEN, else the file `edgefleet up` wrote in
development (`<data_dir>/operator.token`; see cloud.cli.operator_token). HTTP is the standard library's
`urllib`: httpx is a test dependency only, and a user's `cloud` install does not have it.
`devices enroll|revoke` live in cloud.cli.enroll; tables and --json in cloud.cli.tables. A refusal by the
API is one line on stderr, `error: <detail>`, and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cloud.cli.tables import Column, labels_text, print_rows

DEFAULT_API = "http://127.0.0.1:8080"


def register(subparsers: argparse._SubParsersAction) -> None:
    from cloud.cli.rollout import add_strategy_args, duration_s

    deploy = subparsers.add_parser("deploy", help="roll a model version out to devices (staged with --strategy)")
    deploy.add_argument("model_id")
    deploy.add_argument("--version", help="model version (default: the latest)")
    deploy.add_argument("--devices", default="", help="device ids, comma-separated: 'pi-01,pi-02'")
    deploy.add_argument("--label", "--to", action="append", default=[], help="KEY=VALUE device label selector")
    deploy.add_argument("--wait-for-devices", action="store_true",
                        help="accept a --label selector that matches no device yet: devices that join later get it")
    add_strategy_args(deploy, default="all_at_once")  # canary or waves: a staged rollout (edgefleet rollout)
    deploy.add_argument("--dry-run", action="store_true",
                        help="print who would get it, in which wave, who is skipped and why; change nothing")
    deploy.add_argument("--wait", action="store_true", help="follow the rollout until every device answered")
    deploy.add_argument("--timeout", type=duration_s, default=24 * 3600.0, help="give up waiting after this")
    deploy.add_argument("--api", default=DEFAULT_API, help=f"console API (default {DEFAULT_API})")
    deploy.add_argument("--json", action="store_true", help="print the API's JSON answer")
    deploy.set_defaults(func=_deploy)

    devices = subparsers.add_parser("devices", help="list devices and their state; enroll or revoke one")
    devices.add_argument("--api", default=DEFAULT_API)
    devices.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    devices.set_defaults(func=_devices)
    from cloud.cli.enroll import register_device_actions

    register_device_actions(devices, add_client_args)

    models = subparsers.add_parser("models", help="list registered models and their latest version")
    models.add_argument("--api", default=DEFAULT_API)
    models.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
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
    return _exchange(args, method, url, json_body)[0]


def api_list(args: argparse.Namespace, url: str, *, max_pages: int = 10_000) -> list[Any]:
    """Every row of a paged list: its pages one after the other, following each `Link: <...>; rel="next"`
    (cloud.api.paging)."""
    from urllib.parse import urljoin

    from cloud.api.paging import link_next_url

    rows: list[Any] = []
    next_url: str | None = url
    for _ in range(max_pages):  # a server that keeps linking forever does not keep the CLI forever
        if next_url is None:
            break
        page, headers = _exchange(args, "GET", next_url, None)
        rows += page
        following = link_next_url(headers.get("link"))
        next_url = urljoin(next_url, following) if following else None
    return rows


def _exchange(args: argparse.Namespace, method: str, url: str, json_body: object) -> tuple[Any, Any]:
    """(the JSON answer, the response headers) of one call; gzip asked for and undone."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {_token(args)}", "Accept": "application/json", "Accept-Encoding": "gzip"}
    data = None
    if json_body is not None:
        data, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10.0) as response:
            body, answer_headers = response.read(), response.headers
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"error: {error_detail(exc.code, _gunzipped(exc.read(), exc.headers))}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SystemExit(f"error: cannot reach the console API at {url}: {reason}") from None
    body = _gunzipped(body, answer_headers)
    return (json.loads(body) if body else None), answer_headers


def _gunzipped(body: bytes, headers: Any) -> bytes:
    import gzip

    return gzip.decompress(body) if body and headers.get("content-encoding", "") == "gzip" else body


def error_detail(status: int, body: bytes) -> str:
    """One line from an API refusal: its `detail` (each problem of a 422 as `field: message`)."""
    try:
        detail = json.loads(body)["detail"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: {body.decode(errors='replace').strip()[:200] or 'no detail'}"
    if isinstance(detail, list):  # FastAPI's validation errors
        detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}" for e in detail)
    return " ".join(str(detail).split())


def split_ids(text: str) -> list[str]:
    """'pi-01, pi-02,,' -> ['pi-01', 'pi-02']"""
    return [part.strip() for part in text.split(",") if part.strip()]


def labels_of(items: list[str]) -> dict[str, str]:
    """['site=lab', ' zone = b'] -> {'site': 'lab', 'zone': 'b'}; SystemExit for an item without '='."""
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --label takes KEY=VALUE, got {item!r}")
        labels[key.strip()] = value.strip()
    return labels


def _deploy(args: argparse.Namespace) -> int:
    if args.strategy != "all_at_once" or args.dry_run:
        from cloud.cli.rollout import start_rollout

        return start_rollout(args)
    if args.min_agent_version or args.skip_offline:  # a plain deploy targets every match: it would ignore them
        raise SystemExit("error: --min-agent-version and --skip-offline leave devices out of a staged rollout's "
                         "plan: add --strategy canary or waves (--dry-run shows who would be left out)")
    labels = labels_of(args.label)
    body = {
        "model_id": args.model_id,
        "version": args.version,
        "device_ids": split_ids(args.devices),
        "labels": labels,
        "wait_for_devices": args.wait_for_devices,
    }
    result: dict = api_call(args, "POST", f"{args.api}/api/v1/deployments", json_body=body)
    if args.json and not args.wait:
        print(json.dumps(result, indent=2))
        return 0
    print(f"deployment {result['id']}: {result['model_id']} v{result['version']} -> {targets_text(result)}")
    return follow_deployment(args, result["id"], args.timeout) if args.wait else 0


SHOWN_TARGETS = 20  # device ids `deploy` prints; the API's detail carries the first 100, counts cover all


def targets_text(detail: dict) -> str:
    """A deployment's targets in a line: the first few ids and how many more (older clouds sent no
    target_count: their list held every target)."""
    shown = [t["device_id"] for t in detail.get("targets", [])][:SHOWN_TARGETS]
    total = detail.get("target_count", len(detail.get("targets", [])))
    more = f" and {total - len(shown)} more" if total > len(shown) else ""
    return ", ".join(shown) + more if shown else "(no device)"


def follow_deployment(args: argparse.Namespace, deployment_id: str, timeout_s: float, poll_s: float = 2.0) -> int:
    """Print a line whenever the deployment's counts change, until it finishes (0: succeeded; 1: otherwise)."""
    import time

    deadline, last = time.monotonic() + timeout_s, ""
    while True:
        # counts only (target_limit=0): the targets themselves would be a page of JSON each poll
        found = api_call(args, "GET", f"{args.api}/api/v1/deployments/{deployment_id}?target_limit=0")
        counts = ", ".join(f"{status} {n}" for status, n in sorted(found["counts"].items()))
        line = f"{found['status']:<11} {counts}" + (f"  ({found['waiting']})" if found.get("waiting") else "")
        if line != last:
            print(line, flush=True)
            last = line
        if found["status"] != "in_progress":
            return 0 if found["status"] == "succeeded" else 1
        if time.monotonic() >= deadline:
            print(f"still in progress after {timeout_s:.0f} s", file=sys.stderr)
            return 1
        time.sleep(poll_s)


def _devices(args: argparse.Namespace) -> int:
    rows: list[dict] = api_list(args, f"{args.api}/api/v1/devices")
    print_rows(rows, DEVICE_COLUMNS, as_json=args.json)
    return 0


def _models(args: argparse.Namespace) -> int:
    rows: list[dict] = api_call(args, "GET", f"{args.api}/api/v1/models")
    print_rows(rows, MODEL_COLUMNS, as_json=args.json)
    return 0


DEVICE_COLUMNS = [
    Column("device", lambda r: r["id"], key=True),
    Column("online", lambda r: r["online"]),
    Column("model", lambda r: r["active_model_id"], key=True),
    Column("version", lambda r: r["active_version"], key=True),
    Column("state", lambda r: r["update_state"], key=True),
    Column("error", lambda r: r["last_error_code"], optional=True),  # a column only when a device has one
    Column("labels", lambda r: labels_text(r["labels"])),
]
MODEL_COLUMNS = [
    Column("model", lambda r: r["model_id"], key=True),
    Column("latest", lambda r: r["latest_version"], key=True),
    Column("sequence", lambda r: r["latest_sequence"]),
    Column("versions", lambda r: r["versions"]),
]
