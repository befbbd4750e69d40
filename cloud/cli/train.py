"""`edgefleet train`: run the training pipeline once against the same data dir and database as `up`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# `edgefleet compile`'s choices (model_compiler.types.QUANTIZE_CHOICES; not imported: it would load the
# compiler for every command line; tests/unit/cloud/test_train_cli.py keeps the two equal)
QUANTIZE_CHOICES = ("none", "int8", "fp16", "auto")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="run the pipeline: train, evaluate, compile, sign, register")
    train.add_argument("--model-id", default="digits-classifier")
    train.add_argument("--dataset", default="digits", help="a dataset scikit-learn ships: digits, breast_cancer, ...")
    train.add_argument("--estimator", default="logreg", help="logreg, mlp or random_forest")
    train.add_argument(
        "--quantize", default="int8", choices=QUANTIZE_CHOICES,
        help="as `edgefleet compile`: none, int8 (default), fp16 (weights), or auto (the smallest passing the gate)",
    )
    train.add_argument("--target", default="onnx", help="onnx, tflite or all")
    train.add_argument("--data-dir", type=Path, help="the same data dir as `edgefleet up` (default .edgefleet)")
    train.add_argument("--database-url", help="the same database as `edgefleet up`")
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from cloud.db import create_tables, make_engine
    from cloud.errors import CloudError
    from cloud.registry import LocalArtifactStore, load_or_create_keys
    from cloud.settings import CloudSettings
    from cloud.training.pipeline import TrainingConfig, run_training_pipeline
    from model_compiler import CompileError

    overrides = {"data_dir": args.data_dir, "database_url": args.database_url}
    settings = CloudSettings(**{k: v for k, v in overrides.items() if v is not None})
    assert settings.artifacts_dir is not None
    try:
        signer = load_or_create_keys(settings).manifest_signer()
        engine = make_engine(settings.database)
        create_tables(engine)
        config = TrainingConfig(model_id=args.model_id, dataset=args.dataset, estimator=args.estimator,
                                target=args.target, quantize=args.quantize,
                                manifest_valid_days=settings.manifest_valid_days)
        result = run_training_pipeline(engine, LocalArtifactStore(settings.artifacts_dir), signer, config,
                                       progress=lambda step: print(f"  {step} ...", flush=True))
    except (CloudError, CompileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items())
    print(f"registered {result.model_id} v{result.version} (sequence {result.sequence}, run {result.run_id}): "
          f"{metrics}; artifacts: {', '.join(result.artifact_names)}")
    return 0
