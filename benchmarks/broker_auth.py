"""What the embedded broker's authentication costs: CONNECT→CONNACK latency with auth on and off, side by
side in one run (the two brokers alternate, so machine noise hits both alike), and one ACL check.

    .venv/bin/python benchmarks/broker_auth.py [--connects 300] [--devices 50] [--database-url URL]

Connects are raw MQTT 3.1.1 CONNECT packets on fresh TCP connections (no client library in the figure);
the authenticated broker looks the device's credential up in the database (SQLite in a temp dir unless
--database-url) and checks its PBKDF2 hash. Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import struct
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from sqlmodel import Session  # noqa: E402

from cloud.db import create_tables, make_engine  # noqa: E402
from cloud.identity.acl import CLOUD_USER, Access  # noqa: E402
from cloud.identity.enrollment import enroll_device  # noqa: E402
from cloud.identity.passwords import hash_password, verify_password  # noqa: E402
from cloud.mqtt.broker import EmbeddedBroker  # noqa: E402
from cloud.mqtt.broker_auth import BrokerAuthority  # noqa: E402
from protocols.topics import Channel, device_topic  # noqa: E402

FLEET = "bench"


def connect_packet(client_id: str, user: str | None, password: str | None) -> bytes:
    def field(data: bytes) -> bytes:
        return struct.pack("!H", len(data)) + data

    flags = 0x02 | (0xC0 if user is not None else 0)
    payload = field(client_id.encode())
    if user is not None and password is not None:
        payload += field(user.encode()) + field(password.encode())
    body = field(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 30) + payload
    return bytes([0x10, len(body)]) + body


def connect_once(port: int, packet: bytes) -> float:
    """Seconds from TCP connect to CONNACK; the CONNACK must accept."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(packet)
        answer = sock.recv(4)
        elapsed = time.perf_counter() - start
        if answer != b"\x20\x02\x00\x00":
            raise RuntimeError(f"CONNECT not accepted: {answer!r}")
        sock.sendall(b"\xe0\x00")  # DISCONNECT
    return elapsed


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


def acl_costs(authority: BrokerAuthority, number: int = 20000) -> dict[str, float]:
    own = device_topic("dev-0001", Channel.TELEMETRY, fleet=FLEET)
    other = device_topic("dev-0002", Channel.TELEMETRY, fleet=FLEET)
    every_desired = f"ef/v1/{FLEET}/dev/+/desired"
    cases = {
        "device_allowed": lambda: authority.may("dev-0001", Access.WRITE, own),
        "device_denied": lambda: authority.may("dev-0001", Access.WRITE, other),  # walks every grant
        "device_subscribe_wildcard_denied": lambda: authority.may("dev-0001", Access.READ, every_desired),
        "cloud_allowed": lambda: authority.may(CLOUD_USER, Access.WRITE, other),
    }
    assert cases["device_allowed"]() and not cases["device_denied"]() and cases["cloud_allowed"]()
    best = {name: min(timeit.repeat(fn, number=number, repeat=3)) for name, fn in cases.items()}
    return {name: round(seconds / number * 1e6, 3) for name, seconds in best.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connects", type=int, default=300)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--database-url")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(args.database_url or f"sqlite:///{tmp}/bench.db")
        create_tables(engine)
        with Session(engine) as session:
            passwords = {d: enroll_device(session, d).password for d in (f"dev-{i:04d}" for i in range(args.devices))}
            session.commit()
        authority = BrokerAuthority(engine, FLEET, "cloud-password")
        with EmbeddedBroker() as open_broker, EmbeddedBroker(authority=authority) as auth_broker:
            devices = sorted(passwords)
            timings: dict[str, list[float]] = {"auth_off": [], "auth_on": []}
            for i in range(args.connects + 20):
                device = devices[i % len(devices)]
                off = connect_once(open_broker.port, connect_packet(device, None, None))
                on = connect_once(auth_broker.port, connect_packet(device, device, passwords[device]))
                if i >= 20:  # warm-up: imports, first database connections
                    timings["auth_off"].append(off)
                    timings["auth_on"].append(on)
        hashed = hash_password("x" * 43)
        pbkdf2_us = min(timeit.repeat(lambda: verify_password("x" * 43, hashed), number=200, repeat=3)) / 200 * 1e6
        acl = acl_costs(authority)
        engine.dispose()

    connect = {name: summary(samples) for name, samples in timings.items()}
    off = connect["auth_off"]
    results: dict[str, Any] = {
        "benchmark": "broker_auth",
        "connects": args.connects,
        "database": "postgresql" if args.database_url else "sqlite",
        "connect": connect,
        "pbkdf2_verify_us": round(pbkdf2_us, 1),
        "acl_check_us": acl,
        "ratios": {
            "connect_median_auth_on_over_off": round(connect["auth_on"]["median_ms"] / off["median_ms"], 2),
            "connect_p95_auth_on_over_off": round(connect["auth_on"]["p95_ms"] / off["p95_ms"], 2),
            "acl_check_denied_over_connect_off_median": round(
                acl["device_denied"] / (off["median_ms"] * 1000), 5
            ),
        },
    }
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
