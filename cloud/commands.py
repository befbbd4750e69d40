"""Cloud-side subcommands of `edgefleet`: keys, up, demo, deploy, devices, models.

Handlers import their heavy modules lazily so that `edgefleet --help` and the agent's commands stay light.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_API = "http://127.0.0.1:8080"


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

    up = subparsers.add_parser("up", help="run the cloud stack (broker, ingestion, console API)")
    up.add_argument("--data-dir", type=Path, help="where the database, keys and artifacts live")
    up.add_argument("--mqtt-url", help="use this broker (mqtt://host:port) instead of the embedded one")
    up.add_argument("--mqtt-port", type=int, default=1883,
                    help="port of the embedded broker (default 1883; 0 picks a free one)")
    up.add_argument("--database-url", help="use this database (e.g. postgresql://...) instead of SQLite")
    up.add_argument("--host", help="console API host (default 127.0.0.1)")
    up.add_argument("--port", type=int, help="console API port (default 8080; 0 picks a free one)")
    up.set_defaults(func=_up)

    train = subparsers.add_parser("train", help="run the pipeline: train, evaluate, compile, sign, register")
    train.add_argument("--model-id", default="digits-classifier")
    train.add_argument("--dataset", default="digits", help="a dataset scikit-learn ships: digits, breast_cancer, ...")
    train.add_argument("--estimator", default="logreg", help="logreg, mlp or random_forest")
    train.add_argument("--quantize", default="int8", choices=["none", "int8", "auto"])
    train.add_argument("--target", default="onnx", help="onnx, tflite or all")
    train.add_argument("--data-dir", type=Path, help="the same data dir as `edgefleet up` (default .edgefleet)")
    train.add_argument("--database-url", help="the same database as `edgefleet up`")
    train.set_defaults(func=_train)

    demo = subparsers.add_parser("demo", help="run the whole loop end to end with simulated devices")
    demo.add_argument("--devices", type=int, default=5, help="number of simulated devices (default 5)")
    demo.add_argument("--data-dir", type=Path, help="where to keep the demo's data (default: a new temp dir)")
    demo.add_argument("--mqtt-url", help="use this broker instead of the embedded one")
    demo.add_argument("--database-url", help="use this database instead of SQLite")
    demo.add_argument("--inferences", type=int, default=200, help="inferences per device (default 200)")
    demo.add_argument("--estimator", default="logreg", choices=["logreg", "mlp"], help="model to train")
    demo.add_argument("--drift", type=float, default=1.5,
                      help="shift (in std units) injected into a few features on half the devices")
    demo.set_defaults(func=_demo)

    deploy = subparsers.add_parser("deploy", help="roll a model version out to devices")
    deploy.add_argument("model_id")
    deploy.add_argument("--version", help="model version (default: the latest)")
    deploy.add_argument("--devices", default="", help="comma-separated device ids")
    deploy.add_argument("--label", action="append", default=[], help="KEY=VALUE device label selector")
    deploy.add_argument("--api", default=DEFAULT_API, help=f"console API (default {DEFAULT_API})")
    deploy.set_defaults(func=_deploy)

    devices = subparsers.add_parser("devices", help="list devices and their state")
    devices.add_argument("--api", default=DEFAULT_API)
    devices.set_defaults(func=_devices)

    models = subparsers.add_parser("models", help="list registered model versions")
    models.add_argument("--api", default=DEFAULT_API)
    models.set_defaults(func=_models)


def _keys_init(args: argparse.Namespace) -> int:
    from cloud.signing import KeyStoreError, init_keys

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
    from cloud.signing import KeyStoreError

    try:
        _print_keys(args.dir)
    except KeyStoreError as exc:
        print(f"error: {exc}")
        return 1
    return 0


def _print_keys(directory: Path) -> None:
    import datetime as dt

    from cloud.signing import load_root_public, load_signer
    from protocols.trust import key_id
    from protocols.v1 import messages_pb2 as pb

    signer = load_signer(directory)
    delegation = pb.KeyDelegation.FromString(signer.delegation.delegation)
    expiry = dt.datetime.fromtimestamp(delegation.not_after_ms / 1000, tz=dt.UTC)
    print(f"root key    {key_id(load_root_public(directory))}  ({directory / 'root.pub'})")
    print(f"targets key {signer.key_id}  delegated until {expiry:%Y-%m-%d %H:%M} UTC")


def _up(args: argparse.Namespace) -> int:
    from cloud.up import run_up

    return run_up(args)


def _train(args: argparse.Namespace) -> int:
    from cloud.artifacts import LocalArtifactStore
    from cloud.db import create_tables, make_engine
    from cloud.errors import CloudError
    from cloud.pipeline import TrainingConfig, run_training_pipeline
    from cloud.service import load_or_create_signer
    from cloud.settings import CloudSettings
    from model_compiler import CompileError

    overrides = {"data_dir": args.data_dir, "database_url": args.database_url}
    settings = CloudSettings(**{k: v for k, v in overrides.items() if v is not None})
    assert settings.artifacts_dir is not None
    try:
        signer = load_or_create_signer(settings)
        engine = make_engine(settings.database)
        create_tables(engine)
        config = TrainingConfig(model_id=args.model_id, dataset=args.dataset, estimator=args.estimator,
                                target=args.target, quantize=args.quantize)
        result = run_training_pipeline(engine, LocalArtifactStore(settings.artifacts_dir), signer, config,
                                       progress=lambda step: print(f"  {step} ...", flush=True))
    except (CloudError, CompileError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items())
    print(f"registered {result.model_id} v{result.version} (sequence {result.sequence}, run {result.run_id}): "
          f"{metrics}; artifacts: {', '.join(result.artifact_names)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from cloud.demo import run_demo

    return run_demo(args)


def _api_call(method: str, url: str, **kwargs: object) -> object:
    import httpx

    try:
        response = httpx.request(method, url, timeout=10.0, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        raise SystemExit(f"error: cannot reach the console API at {url}: {exc}") from None
    if response.status_code >= 400:
        raise SystemExit(f"error: {response.status_code} {response.text}")
    return response.json()


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
    result: dict = _api_call("POST", f"{args.api}/api/v1/deployments", json=body)  # type: ignore[assignment]
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
    rows: list[dict] = _api_call("GET", f"{args.api}/api/v1/devices")  # type: ignore[assignment]
    _print_table(rows, ["id", "online", "active_model_id", "active_version", "update_state", "last_error_code",
                        "labels"])
    return 0


def _models(args: argparse.Namespace) -> int:
    rows: list[dict] = _api_call("GET", f"{args.api}/api/v1/models")  # type: ignore[assignment]
    _print_table(rows, sorted({k for row in rows for k in row}))
    return 0
