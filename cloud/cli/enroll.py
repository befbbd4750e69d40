"""`edgefleet devices enroll|revoke`: enrollment tokens and revocation, through the console API (admin).

`enroll` prints the token (shown once) and the exact `edgefleet-agent provision` command that spends it on
the device; `revoke` withdraws a device's broker credentials, after which the cloud ignores its messages.
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Callable
from typing import Any

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """'3600', '90s', '30m', '1h', '7d' -> seconds (argparse type)."""
    text = text.strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS_S else (text, "s")
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or a number with s, m, h or d (1h), not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a lifetime must be positive, not {text!r}")
    return int(value * _UNITS_S[unit])


def register_device_actions(devices: argparse.ArgumentParser, add_client_args: Callable[..., None]) -> None:
    actions = devices.add_subparsers(dest="devices_command", metavar="ACTION")
    enroll = actions.add_parser("enroll", help="create a single-use enrollment token and print how to use it")
    enroll.add_argument("--device-id", help="only this device id may enroll with the token")
    enroll.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="label the device gets (its own reports cannot change it); repeat for several")
    enroll.add_argument("--ttl", type=parse_ttl, default=None, help="lifetime, e.g. 1h, 30m, 7d or 3600 "
                                                                    "(default 24h; at most 30d)")
    enroll.set_defaults(func=_enroll)
    revoke = actions.add_parser("revoke", help="withdraw a device's broker credentials")
    revoke.add_argument("device_id")
    revoke.set_defaults(func=_revoke)
    for parser in (enroll, revoke):  # SUPPRESS: `devices --api X enroll` keeps the X its parent parsed
        add_client_args(parser, with_api=True, default=argparse.SUPPRESS)


def _labels(items: list[str]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --label takes KEY=VALUE, got {item!r}")
        labels[key] = value
    return labels


def _enroll(args: argparse.Namespace) -> int:
    from cloud.cli.remote import api_call

    body: dict[str, Any] = {"labels": _labels(args.label), "device_id": args.device_id}
    if args.ttl is not None:
        body["ttl_s"] = args.ttl
    created = api_call(args, "POST", f"{args.api}/api/v1/enrollment-tokens", json_body=body)
    expires = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(created["expires_at_ms"] / 1000))
    device_id = created["device_id"] or "DEVICE_ID"
    command = ["edgefleet-agent", "provision", "--token", created["token"], "--cloud-url", args.api,
               "--device-id", device_id, "--state-dir", "/var/lib/edgefleet", "--out", "/etc/edgefleet/agent.toml"]
    print(created["token"])
    scope = f"device {created['device_id']}" if created["device_id"] else "any new device id"
    labels = ", ".join(f"{k}={v}" for k, v in created["labels"].items()) or "none"
    print(f"# enrollment token {created['id']}: single use, {scope}, labels {labels}, expires {expires}; "
          "shown once.")
    print("# on the device, run:")
    print(" ".join(shlex.quote(part) for part in command))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from cloud.cli.remote import api_call

    result = api_call(args, "POST", f"{args.api}/api/v1/devices/{args.device_id}/revoke")
    state = "revoked" if result["revoked"] else "was already revoked"
    print(f"device {result['device_id']} {state}: the cloud ignores its messages now and an embedded broker "
          "drops it now; a Mosquitto after `edgefleet broker-config --refresh` and a reload")
    return 0
