"""`edgefleet up`: the cloud stack as a long-running service, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloud.service import CloudService
    from cloud.settings import CloudSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser("up", help="run the cloud stack (broker, ingestion, console API)")
    up.add_argument("--data-dir", type=Path, help="where the database, keys and artifacts live")
    up.add_argument("--mqtt-url", help="use this broker (mqtt://host:port) instead of the embedded one")
    up.add_argument("--mqtt-port", type=int, default=1883,
                    help="port of the embedded broker (default 1883; 0 picks a free one)")
    up.add_argument("--mqtt-host", help="address the embedded broker listens on (default 127.0.0.1; "
                                        "0.0.0.0 for devices on the LAN)")
    up.add_argument("--database-url", help="use this database (e.g. postgresql://...) instead of SQLite")
    up.add_argument("--host", help="console API host (default 127.0.0.1)")
    up.add_argument("--port", type=int, help="console API port (default 8080; 0 picks a free one)")
    up.add_argument("--api-processes", type=int,
                    help="console API processes beside the cloud's own (default 1; 0 serves it from the cloud's "
                         "process, as before)")  # fmt: skip
    up.set_defaults(func=run_up)


def run_up(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from cloud.errors import CloudError
    from cloud.heap import freeze_startup_heap
    from cloud.service import CloudService
    from cloud.settings import CloudSettings

    overrides = {
        "data_dir": args.data_dir,
        "mqtt_url": args.mqtt_url,
        "embedded_mqtt_port": args.mqtt_port,
        "embedded_mqtt_host": args.mqtt_host,
        "database_url": args.database_url,
        "api_host": args.host,
        "api_port": args.port,
        # its own process unless asked otherwise: ingestion and the controller then never hold the API's
        # interpreter lock (cloud.api.processes)
        "api_processes": args.api_processes if args.api_processes is not None
        else None if "EDGEFLEET_API_PROCESSES" in os.environ else 1,
        # and the alert evaluation in one of its own (cloud.monitoring.alert_process): it held the cloud's lock
        # for seconds every minute
        "alert_process": None if "EDGEFLEET_ALERT_PROCESS" in os.environ else True,
    }
    try:
        settings = CloudSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        print(f"error: bad settings: {exc}", file=sys.stderr)
        return 2
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        with CloudService(settings) as service:
            freeze_startup_heap()  # full collections no longer walk the started stack (cloud.heap)
            print(f"console API  {service.api_url}  (OpenAPI docs at {service.api_url}/docs)")
            print(f"MQTT broker  {service.mqtt_url}")
            print(f"database     {settings.database}")
            print(f"fleet        {service.fleet}")
            print(f"trust chain  {service.trust_chain_path}  (devices get it by enrolling: edgefleet devices enroll)")
            print(f"API token    {_operator_token(service, settings)}")
            print("running; Ctrl-C stops", flush=True)
            stopping.wait()
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _operator_token(service: CloudService, settings: CloudSettings) -> str:
    """Where the operator's token is: development creates one on first start; production never does."""
    from cloud.cli.operator_token import ensure_dev_token

    engine = service.engine
    assert engine is not None
    if not settings.creates_operator_token_on_start:
        return "none created (production): edgefleet tokens create --name NAME --role admin --database-url ..."
    found = ensure_dev_token(engine, settings.data_dir)
    if found is None:
        return "admin tokens exist but none is in the data dir: ask an admin, or edgefleet tokens create"
    path, created = found
    return f"{path} ({'created, admin' if created else 'admin'}; the CLI reads it, or send it as a Bearer token)"
