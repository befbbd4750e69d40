"""`edgefleet compile MODEL.joblib --data DATA.npz|.csv|.parquet|.pkl --out DIR`, with `--target onnx|tflite|all` and
`--quantize none|int8|fp16|auto`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from model_compiler.types import QUANTIZE_CHOICES, TARGET_CHOICES


def _number(kind: type, low: float, high: float | None = None) -> Any:
    """An argparse type: a number of `kind` within [low, high], else a one-line usage error."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {bounds}")
        return value

    return parse


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compile",
        help="compile a fitted scikit-learn model to gated ONNX / TFLite artifacts and a manifest fragment",
        description="Compile a joblib-saved scikit-learn estimator or Pipeline. Every candidate is checked "
        "against the source estimator on the held-out data; one outside the tolerance is refused.",
    )
    p.add_argument("model", help="fitted estimator or Pipeline saved with joblib (trusted: it is a pickle)")
    p.add_argument(
        "--data", required=True,
        help="held-out data (calibration + gate): .npz with arrays X and y, or a DataFrame as .csv, .parquet or "
        "a pickle (.pkl/.joblib, trusted) whose --label column is y",
    )
    p.add_argument("--label", default="y", help="label column of DataFrame data (default y)")
    p.add_argument("--target", choices=TARGET_CHOICES, default="onnx", help="(default onnx)")
    p.add_argument(
        "--quantize", choices=QUANTIZE_CHOICES, default="auto",
        help="auto (default): the smallest of fp32, INT8 and FP16-weight artifacts that passes the gate "
        "(the choice and why: manifest lineage compiler_choice.<target>)",
    )
    p.add_argument("--out", required=True, help="directory for the artifacts and manifest.fragment.json")
    p.add_argument(
        "--reference",
        help="training data for the drift reference profile (.npz with array X, or a DataFrame file as for "
        "--data; its label column, if any, is left out)",
    )
    p.add_argument("--max-accuracy-drop", type=_number(float, 0.0, 100.0), default=0.5,
                   help="points of accuracy (default 0.5)")
    p.add_argument("--min-agreement", type=_number(float, 0.0, 1.0), default=0.99,
                   help="share of labels kept, 0..1 (default 0.99)")
    p.add_argument("--max-error-increase", type=_number(float, 0.0), default=1.0,
                   help="regressors: %% RMSE rise (default 1)")
    p.add_argument("--self-test-vectors", type=_number(int, 1, 10_000), default=16,
                   help="rows embedded as self-test vectors (default 16)")
    p.add_argument("--self-test-from", choices=("synthetic", "heldout"), default="synthetic",
                   help="synthetic (default): vectors drawn from the reference profile, no real row in the "
                        "manifest; heldout: real held-out rows (readable by anyone who reads a desired state)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_compiler import CompileError, Gate, GateRefusedError, compile_estimator, load_data, load_estimator

    try:
        estimator = load_estimator(args.model)
        x, y = load_data(args.data, label=args.label)
        reference = load_data(args.reference, need_y=False, label=args.label)[0] if args.reference else None
        gate = Gate(
            max_accuracy_drop_pts=args.max_accuracy_drop,
            min_agreement=args.min_agreement,
            max_error_increase_pct=args.max_error_increase,
        )
        result = compile_estimator(
            estimator,
            x,
            y,
            target=args.target,
            quantize=args.quantize,
            reference_X=reference,
            gate=gate,
            n_self_test=args.self_test_vectors,
            self_test_from=args.self_test_from,
        )
    except GateRefusedError as exc:
        print(f"edgefleet compile: refused by the accuracy gate\n{exc}", file=sys.stderr)
        return 3
    except CompileError as exc:
        print(f"edgefleet compile: {exc}", file=sys.stderr)
        return 2
    print(result.report.table())
    try:
        written = result.write(args.out)
    except OSError as exc:
        print(f"edgefleet compile: cannot write to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0
