"""Where the broker is: `mqtt://host:port` / `mqtts://host:port` parsed and checked, for the paho adapter.

Kept apart from `edge_agent.paho_transport` (which re-exports both names) because it is pure and has its
own tests; a bad URL is a `TransportError`, the port's error, so callers catch one type.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from edge_agent.errors import TransportError

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> BrokerAddress:
    """`mqtt://host:port` or `mqtts://host:port` -> BrokerAddress; TransportError says what is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise TransportError(f"broker URL must be a non-empty string like mqtt://host:1883, got {url!r}")
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise TransportError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    try:
        port = parts.port
    except ValueError:
        raise TransportError(f"broker URL {url!r}: port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise TransportError(f"broker URL {url!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise TransportError(f"broker URL {url!r}: no path, query or fragment allowed")
    if parts.username is not None or parts.password is not None:
        raise TransportError(f"broker URL {url!r}: pass credentials as username=/password=, not in the URL")
    if port == 0:
        raise TransportError(f"broker URL {url!r}: port must be a number from 1 to 65535")
    return BrokerAddress(parts.hostname, port or _DEFAULT_PORTS[scheme], tls=scheme == "mqtts")
