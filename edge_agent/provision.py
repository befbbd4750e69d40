"""Provisioning: the device's config file, its pinned trust chain and (optionally) the broker's CA, written
side by side, from explicit values (`provision --mqtt-url --trust`) or from an enrollment (`--token`).

Nothing is written until everything is known to be usable: the trust chain verifies, the settings load.
The config is 0600 whenever it holds a password (always, after an enrollment); the chain is public.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from edge_agent.config import load_settings
from edge_agent.errors import ConfigError
from edge_agent.store import write_atomically
from protocols.roots import RootOfTrust
from protocols.trust import VerificationError
from protocols.v1 import messages_pb2 as pb

CHAIN_NAME = "trust.chain"
CA_NAME = "broker-ca.pem"


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


def parse_labels(items: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--label takes KEY=VALUE, got {item!r}")
        labels[key] = value
    return labels


def chain_fleet(chain: bytes, source: str) -> str:
    """The fleet a TrustChain names, or ConfigError saying `source` is not a valid chain."""
    try:
        return RootOfTrust.from_chain(pb.TrustChain.FromString(chain)).fleet
    except (DecodeError, VerificationError) as exc:
        raise ConfigError(f"{source} is not a valid trust chain (trust.chain): {exc}") from None


def same_root(chain: bytes, pinned: bytes) -> bool:
    """True when both chains start from the same first root version (the one a device pins)."""
    first, expected = pb.TrustChain.FromString(chain), pb.TrustChain.FromString(pinned)
    return bool(first.roots) and bool(expected.roots) and first.roots[0] == expected.roots[0]


def write_device_files(out: Path, values: dict[str, Any], chain: bytes, *, tls_ca_pem: str | None = None) -> Path:
    """Validate, then write `out` (TOML), trust.chain and, if given, the broker's CA beside it; the chain's path.

    `values` are AgentSettings fields; trust_path (and tls_ca, when tls_ca_pem is given) are filled in here.
    """
    directory = out.parent
    values = {**values, "trust_path": str(directory / CHAIN_NAME)}
    if tls_ca_pem is not None:
        values["tls_ca"] = str(directory / CA_NAME)
    # validate before writing anything; explicit values here, not the environment's
    checked = {k: v for k, v in values.items() if v is not None and k not in ("trust_path", "tls_ca")}
    load_settings(**checked)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / CHAIN_NAME, chain, mode=0o644)
    os.chmod(directory / CHAIN_NAME, 0o644)
    if tls_ca_pem is not None:
        write_atomically(directory / CA_NAME, tls_ca_pem.encode(), mode=0o644)
    secret = values.get("mqtt_password") is not None
    write_atomically(out, render_config(values).encode(), mode=0o600 if secret else 0o644)
    os.chmod(out, 0o600 if secret else 0o644)  # an overwritten file keeps its old mode otherwise
    return directory / CHAIN_NAME
