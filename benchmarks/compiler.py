"""The model compiler, measured: size, accuracy, latency and compile time of every family and target.

    .venv/bin/python benchmarks/compiler.py [--families mlp,random_forest] [--datasets digits] [--blocks 7]

For each dataset (digits, breast_cancer, mixed; 70/30 split, seed 0), family and target, the compiler
builds fp32 and (dense families) INT8 artifacts through `compile_estimator`, which also runs the gate.
`mixed` is breast_cancer's first 10 columns with 5% missing values plus two categorical columns (codes
0, 10, ..., 50 and 0..3); there every family sits behind a ColumnTransformer (median SimpleImputer and
a scaler on the numbers, OneHotEncoder on the categories), except HistGradientBoosting, which takes NaN
itself, and `hgb_categorical`, which takes the two columns as categorical features. `mixed_named` is the
same data as a DataFrame with named columns, the two categorical ones as strings (pandas category
dtype): the pipelines select columns by name, and the compiler's artifacts take the batch a device builds
from named columns (strings as category codes); skl2onnx's baseline takes one input per column (string
tensors for the categories), and HistGradientBoosting treats the category columns as categorical. SVC, k-NN and naive
Bayes go through skl2onnx inside the compiler (ONNX fp32 only); the baseline is skl2onnx's own
conversion of the whole pipeline.
Side by side in one run:
  size_bytes / size_ratio         against the fp32 ONNX that skl2onnx makes of the same estimator
  accuracy / accuracy_delta_pts / agreement   on the held-out rows, against scikit-learn
  latency_b1_us / latency_b64_us  one call of the bare runtime (onnxruntime session / TFLite interpreter),
                                  1 thread; adapter_latency_*: through edge_agent.serving.runtime, what the agent
                                  serves (input checks and label decoding included); scikit-learn is
                                  limited to 1 thread too
  latency_b64_ratio               to fp32 in the same runtime;  *_ratio_sklearn: to sklearn's predict
  compile_s                       wall time of compile_estimator for that target/quantization (gate included)
  named_encode_b64_us             mixed_named: the agent's encoding of 64 rows of named columns into the
                                  float batch (edge_agent.serving.columns.ColumnCodec, as the gRPC server
                                  keeps one per model), paid per call before the runtime
Latencies are the minimum over interleaved blocks of the calling thread's CPU time (every runtime and
scikit-learn run on that one thread), so other work on a shared machine does not inflate them;
wall_latency_b64_us is the wall-clock minimum, for comparison.
skl2onnx's HistGradientBoosting converter fails under protobuf >= 7.34 (it passes numpy bools as ints);
the baseline is made with a shim that casts them, only here.
The last line is one JSON object {"records": [...], "targets": {...}, "context": {...}}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402
from sklearn.ensemble import (  # noqa: E402
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LogisticRegression, SGDClassifier  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.naive_bayes import BernoulliNB, GaussianNB, MultinomialNB  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler  # noqa: E402
from sklearn.svm import SVC, LinearSVC  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402

from edge_agent.serving.columns import ColumnCodec  # noqa: E402
from edge_agent.serving.runtime import load_model  # noqa: E402
from model_compiler import GateRefusedError, compile_estimator  # noqa: E402
from model_compiler.columns import encode_frame  # noqa: E402

FAMILIES: dict[str, Callable[[], Any]] = {
    "logreg": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
    "linear_svc": lambda: make_pipeline(StandardScaler(), LinearSVC(random_state=0)),
    "sgd": lambda: make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)),
    "mlp": lambda: make_pipeline(StandardScaler(), MLPClassifier((256, 128), max_iter=300, random_state=0)),
    "decision_tree": lambda: DecisionTreeClassifier(random_state=0),
    "random_forest": lambda: RandomForestClassifier(n_estimators=100, random_state=0),
    "extra_trees": lambda: ExtraTreesClassifier(n_estimators=100, random_state=0),
    "gradient_boosting": lambda: GradientBoostingClassifier(n_estimators=50, random_state=0),
    "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(max_iter=100, random_state=0),
    "svc_rbf": lambda: make_pipeline(StandardScaler(), SVC()),
    "svc_linear": lambda: make_pipeline(StandardScaler(), SVC(kernel="linear")),
    "knn": lambda: make_pipeline(StandardScaler(), KNeighborsClassifier()),
    "gaussian_nb": lambda: GaussianNB(),
    "multinomial_nb": lambda: make_pipeline(MinMaxScaler(), MultinomialNB()),
    "bernoulli_nb": lambda: make_pipeline(StandardScaler(), BernoulliNB()),
    "hgb_categorical": lambda: HistGradientBoostingClassifier(max_iter=100, random_state=0),  # see make_estimator
}
DENSE = {"logreg", "linear_svc", "sgd", "mlp"}
CONVERTED = {"svc_rbf", "svc_linear", "knn", "gaussian_nb", "multinomial_nb", "bernoulli_nb"}  # via skl2onnx
TREES = set(FAMILIES) - DENSE - CONVERTED
# columns hgb_categorical declares categorical (digits: the 8 pixels of the central row, 17 values each)
CATEGORICAL: dict[str, Any] = {"digits": list(range(32, 40)), "mixed": [10, 11], "mixed_named": "from_dtype"}
MIXED_NUMERIC, MIXED_CATEGORICAL = list(range(10)), [10, 11]


def load_mixed(return_X_y: bool = True) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803 (sklearn's loader API)
    """breast_cancer's first 10 columns with 5% holes, a 6-level category tied to the target through the
    first column (codes 0, 10, ..., 50, permuted) and a 4-level category of noise."""
    x, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(0)
    levels = np.digitize(x[:, 0], np.quantile(x[:, 0], [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6]))
    informative = rng.permutation(6)[levels] * 10.0
    noise = rng.integers(0, 4, len(x)).astype(float)
    numeric = x[:, :10].copy()
    numeric[rng.random(numeric.shape) < 0.05] = np.nan
    return np.column_stack([numeric, informative, noise]), y


def load_mixed_named(return_X_y: bool = True) -> tuple[Any, np.ndarray]:  # noqa: N803
    """`mixed` as a DataFrame: f0..f9 (floats with holes), grade and noise (strings, category dtype)."""
    import pandas as pd

    x, y = load_mixed()
    frame = pd.DataFrame(x[:, :10], columns=[f"f{j}" for j in range(10)])
    frame["grade"] = pd.Categorical([f"grade-{int(v) // 10}" for v in x[:, 10]])
    frame["noise"] = pd.Categorical([["red", "green", "blue", "grey"][int(v)] for v in x[:, 11]])
    return frame, y


DATASETS = {
    "digits": load_digits,
    "breast_cancer": load_breast_cancer,
    "mixed": load_mixed,
    "mixed_named": load_mixed_named,
}
NAMED = {"mixed_named": ([f"f{j}" for j in range(10)], ["grade", "noise"])}


def make_estimator(dataset: str, family: str) -> Any | None:
    """The family's estimator for the dataset (behind the mixed-type front on `mixed`), or None where the
    family does not apply (hgb_categorical needs categorical columns)."""
    if family == "hgb_categorical":
        if dataset not in CATEGORICAL:
            return None
        return HistGradientBoostingClassifier(max_iter=100, random_state=0, categorical_features=CATEGORICAL[dataset])
    estimator = FAMILIES[family]()
    if dataset not in ("mixed", *NAMED) or family == "hist_gradient_boosting":
        return estimator
    numeric, categorical = NAMED.get(dataset, (MIXED_NUMERIC, MIXED_CATEGORICAL))
    final = estimator[-1] if hasattr(estimator, "steps") else estimator
    scaler = MinMaxScaler() if family == "multinomial_nb" else StandardScaler()  # MultinomialNB: no negatives
    front = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), scaler), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    return make_pipeline(front, final)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def skl2onnx_fp32(estimator: Any, x: np.ndarray) -> tuple[bytes, Any]:
    """skl2onnx's fp32 ONNX of the estimator (no ZipMap), and an onnxruntime session on it."""
    import onnxruntime as ort
    import skl2onnx.common._container as container
    from skl2onnx import to_onnx

    original = container.make_node

    def make_node(*args: Any, **attrs: Any) -> Any:  # the protobuf >= 7.34 shim (see module docstring)
        fixed = {
            k: [int(v) if isinstance(v, bool | np.bool_) else v for v in value] if isinstance(value, list) else value
            for k, value in attrs.items()
        }
        return original(*args, **fixed)

    final = estimator[-1] if hasattr(estimator, "steps") else estimator
    opsets = {"": 17, "ai.onnx.ml": 3}
    container.make_node = make_node
    # ZipMap off where the converter has it; LinearSVC has none, and an explicit option of its own keeps
    # skl2onnx's Pipeline converter from asking for one
    options = {id(final): {"zipmap": False} if hasattr(final, "predict_proba") else {"nocl": False}}
    try:
        with warnings.catch_warnings():  # skl2onnx reads SVC's probA_, which scikit-learn 1.9 deprecates
            warnings.simplefilter("ignore", FutureWarning)
            sample = _float32_sample(x) if hasattr(x, "columns") else x[:1].astype(np.float32)
            model = to_onnx(estimator, sample, options=options, target_opset=opsets)
    finally:
        container.make_node = original
    data = model.SerializeToString()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return data, ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _wire_values(column: Any, dtype: str) -> Any:
    """A DataFrame column as a gRPC Column carries it: strings (None when missing) or float64 numbers."""
    if dtype == "string":
        return [None if v != v else str(v) for v in column.astype(object).tolist()]
    return column.to_numpy(dtype=np.float64)


def _float32_sample(frame: Any) -> Any:
    """A DataFrame's first row for skl2onnx, which makes one input per column: numbers as float32 (its
    Imputer has no double kernel in onnxruntime), categories as strings."""
    row = frame.iloc[:1].copy()
    for name in row.columns:
        kind = row[name].dtype.kind
        row[name] = row[name].astype(np.float32) if kind in "fiub" else row[name].astype(str).astype(object)
    return row


def skl2onnx_feeds(session: Any, x: Any) -> dict[str, Any]:
    """skl2onnx's inputs: one float matrix, or (a DataFrame) one (rows, 1) tensor per column."""
    inputs = session.get_inputs()
    if not hasattr(x, "columns"):
        return {inputs[0].name: x}
    feeds = {}
    for i in inputs:
        column = x[i.name]
        if i.type == "tensor(string)":
            feeds[i.name] = column.astype(str).to_numpy().reshape(-1, 1)
        else:
            feeds[i.name] = column.to_numpy(dtype=np.float32).reshape(-1, 1)
    return feeds


def raw_runner(runtime: str, data: bytes, output: str, x: np.ndarray) -> Callable[[], Any]:
    """One call of the bare runtime on batch x: what the artifact itself costs, without our adapter."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        return lambda: session.run([output], {"input": x})
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data, num_threads=1)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(x.shape), strict=False)
    interpreter.allocate_tensors()
    out = next(d["index"] for d in interpreter.get_output_details() if d["name"] == output)

    def run() -> Any:
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return run


def timed_blocks(functions: dict[str, Callable[[], Any]], blocks: int, block_s: float = 0.02) -> dict[str, float]:
    """Minimum microseconds per call of each function, measured in interleaved blocks of about block_s:
    CPU time of the calling thread (every runtime here computes on it: one thread each), which time spent
    waiting for a busy core does not inflate; under "wall:<name>" the wall-clock minimum as well."""
    repeats = {}
    for name, fn in functions.items():
        fn()
        start = time.perf_counter()
        fn()
        repeats[name] = max(3, min(500, int(block_s / max(time.perf_counter() - start, 1e-6))))
    best = {name: float("inf") for name in functions}
    wall = {name: float("inf") for name in functions}
    for _ in range(blocks):
        for name, fn in functions.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            for _ in range(repeats[name]):
                fn()
            best[name] = min(best[name], (time.thread_time() - start_cpu) / repeats[name] * 1e6)
            wall[name] = min(wall[name], (time.perf_counter() - start) / repeats[name] * 1e6)
    best.update({f"wall:{name}": us for name, us in wall.items()})
    return best


def bench_family(dataset: str, family: str, blocks: int) -> list[dict[str, Any]]:
    x, y = DATASETS[dataset](return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    estimator = make_estimator(dataset, family)
    if estimator is None:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator = estimator.fit(x_train, y_train)
    named = dataset in NAMED
    x32 = None if named else x_test.astype(np.float32)
    s1, s64 = (x_test.iloc[:1], x_test.iloc[:64]) if named else (x32[:1], x32[:64])  # type: ignore[index]
    b1, b64 = s1, s64  # the runtimes' batches: for named data, what a device builds (set after compiling)
    calls: dict[str, Callable[[], Any]] = {
        "sklearn/1": lambda: estimator.predict(s1),
        "sklearn/64": lambda: estimator.predict(s64),
    }
    sk_size: bytes | None = None
    try:
        sk_size, sk_session = skl2onnx_fp32(estimator, x_train)
    except Exception as exc:  # skl2onnx lacks a converter for some options (categorical HistGradientBoosting)
        log(f"  skl2onnx cannot convert {dataset}/{family}: {type(exc).__name__}: {str(exc)[:120]}")
    else:
        feeds1, feeds64 = skl2onnx_feeds(sk_session, s1), skl2onnx_feeds(sk_session, s64)
        calls["skl2onnx/1"] = lambda: sk_session.run(None, feeds1)
        calls["skl2onnx/64"] = lambda: sk_session.run(None, feeds64)
    built: list[dict[str, Any]] = []
    targets = ["onnx", "tflite"] if family in DENSE else ["onnx"]
    quantizations = ["none", "int8", "fp16"] if family in DENSE else ["none"]
    for target in targets:
        for quantize in quantizations:
            start = time.perf_counter()
            try:
                result = compile_estimator(
                    estimator, x_test, y_test, target=target, quantize=quantize, reference_X=x_train
                )
            except GateRefusedError as exc:
                seconds = time.perf_counter() - start
                best = max(exc.report.candidates, key=lambda c: c.metrics.get("agreement", 0.0))
                built.append(
                    {
                        "target": target,
                        "quantization": quantize,
                        "refused": best.reason,
                        "size_bytes": best.size_bytes,
                        "metrics": best.metrics,
                        "compile_s": seconds,
                        "variant": best.variant,
                    }
                )
                continue
            seconds = time.perf_counter() - start
            if named and b1 is s1:  # the float batch a device builds from the named columns
                specs = list(result.fragment.io.columns)
                rows = encode_frame(x_test, specs, "held-out data")
                b1, b64 = rows[:1], rows[:64]
                # what the agent does per gRPC call before the runtime: named columns to the float batch
                columns = {c.name: _wire_values(s64[c.name], c.dtype) for c in specs}
                codec = ColumnCodec(specs)
                calls["encode/64"] = lambda k=codec, c=columns: k.encode(c)
            artifact = result.artifacts[0]
            model = load_model(artifact.artifact, artifact.data, result.fragment.io)
            key = f"{target}/{quantize}"
            output = artifact.artifact.predicted_output or artifact.artifact.scores_output
            calls[f"{key}/1"] = raw_runner(artifact.artifact.runtime, artifact.data, output, b1)
            calls[f"{key}/64"] = raw_runner(artifact.artifact.runtime, artifact.data, output, b64)
            calls[f"adapter/{key}/1"] = lambda m=model, b=b1: m.predict(b)
            calls[f"adapter/{key}/64"] = lambda m=model, b=b64: m.predict(b)
            variant = next(c.variant for c in result.report.candidates if c.chosen)
            built.append(
                {
                    "target": target,
                    "quantization": quantize,
                    "size_bytes": artifact.artifact.size_bytes,
                    "metrics": dict(artifact.artifact.metrics),
                    "compile_s": seconds,
                    "variant": variant,
                    "emit_s": next(c.compile_s for c in result.report.candidates if c.chosen),
                }
            )
    latency = timed_blocks(calls, blocks=blocks)
    records = []
    for b in built:
        key = f"{b['target']}/{b['quantization']}"
        fp32_key = f"{b['target']}/none"
        record: dict[str, Any] = {
            "dataset": dataset,
            "family": family,
            "estimator": type(estimator[-1] if hasattr(estimator, "steps") else estimator).__name__,
            "target": b["target"],
            "quantization": b["quantization"],
            "weights": b["variant"] or "fp32",
            "size_bytes": b["size_bytes"],
            "skl2onnx_size_bytes": len(sk_size) if sk_size else None,
            "size_ratio": round(b["size_bytes"] / len(sk_size), 4) if sk_size else None,
            "accuracy": round(b["metrics"].get("accuracy", float("nan")), 5),
            "accuracy_delta_pts": round(b["metrics"].get("accuracy_delta_pts", float("nan")), 3),
            "agreement": round(b["metrics"].get("agreement", float("nan")), 5),
            "compile_s": round(b["compile_s"], 4),
            "gate": "refused: " + b["refused"] if "refused" in b else "passed",
        }
        if f"{key}/1" in latency:
            record.update(
                {
                    "emit_s": round(b["emit_s"], 4),
                    "latency_b1_us": round(latency[f"{key}/1"], 2),
                    "latency_b64_us": round(latency[f"{key}/64"], 2),
                    "latency_b1_ratio": round(latency[f"{key}/1"] / latency[f"{fp32_key}/1"], 3),
                    "latency_b64_ratio": round(latency[f"{key}/64"] / latency[f"{fp32_key}/64"], 3),
                    "latency_b1_ratio_sklearn": round(latency[f"{key}/1"] / latency["sklearn/1"], 3),
                    "latency_b64_ratio_sklearn": round(latency[f"{key}/64"] / latency["sklearn/64"], 3),
                    "wall_latency_b64_us": round(latency[f"wall:{key}/64"], 2),
                    "adapter_latency_b1_us": round(latency[f"adapter/{key}/1"], 2),
                    "adapter_latency_b64_us": round(latency[f"adapter/{key}/64"], 2),
                    "skl2onnx_latency_b1_us": round(latency["skl2onnx/1"], 2) if sk_size else None,
                    "skl2onnx_latency_b64_us": round(latency["skl2onnx/64"], 2) if sk_size else None,
                    "sklearn_latency_b64_us": round(latency["sklearn/64"], 2),
                }
            )
        if "encode/64" in latency:  # named columns: the agent's encoding of a 64-row batch, before the runtime
            record["named_encode_b64_us"] = round(latency["encode/64"], 2)
        if b["quantization"] in ("int8", "fp16"):
            fp32 = next(o for o in built if o["target"] == b["target"] and o["quantization"] == "none")
            record["size_ratio_to_fp32"] = round(b["size_bytes"] / fp32["size_bytes"], 4)
        records.append(record)
    return records


def check_targets(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, each with the figures it was judged on."""
    mlp_int8 = [r for r in records if r["family"] == "mlp" and r["quantization"] == "int8"]
    converted = [r for r in records if r["family"] in CONVERTED]
    trees = [r for r in records if r["family"] in TREES]
    return {
        "mlp_int8_size_le_0.28x_fp32": {
            "met": all(r.get("size_ratio_to_fp32", 9) <= 0.28 for r in mlp_int8),
            "figures": {f"{r['dataset']}/{r['target']}": r.get("size_ratio_to_fp32") for r in mlp_int8},
        },
        "mlp_int8_accuracy_within_0.5pts": {
            "met": all(r["accuracy_delta_pts"] >= -0.5 for r in mlp_int8),
            "figures": {f"{r['dataset']}/{r['target']}": r["accuracy_delta_pts"] for r in mlp_int8},
        },
        "mlp_int8_onnx_b64_latency_le_0.8x_fp32": {
            "met": all(r.get("latency_b64_ratio", 9) <= 0.8 for r in mlp_int8 if r["target"] == "onnx"),
            "figures": {r["dataset"]: r.get("latency_b64_ratio") for r in mlp_int8 if r["target"] == "onnx"},
        },
        "trees_size_le_0.25x_skl2onnx_identical_predictions": {
            "met": all((r["size_ratio"] or 0) <= 0.25 and r["agreement"] == 1.0 for r in trees),
            "figures": {f"{r['dataset']}/{r['family']}": [r["size_ratio"], r["agreement"]] for r in trees},
        },
        "converted_families_agree_ge_0.99": {
            "met": all(r["agreement"] >= 0.99 and r["gate"] == "passed" for r in converted),
            "figures": {f"{r['dataset']}/{r['family']}": r["agreement"] for r in converted},
        },
        "compile_under_1s": {
            "met": all(r["compile_s"] < 1.0 for r in records),
            "max_s": max(r["compile_s"] for r in records),
        },
        "tensorflow_installed": _tensorflow_installed(),
    }


def _tensorflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def _line(r: dict[str, Any]) -> str:
    nan = float("nan")
    return (
        f"{r['dataset']:14s} {r['family']:23s} {r['target']:6s} {r['quantization']:4s} {r['weights']:11s} "
        f"size {r['size_bytes']:>9,} ({r['size_ratio'] or nan:.3f}x skl2onnx) acc {r['accuracy']:.4f} "
        f"({r['accuracy_delta_pts']:+.2f}) agree {r['agreement']:.4f} "
        f"b1 {r.get('latency_b1_us', nan):8.1f}us b64 {r.get('latency_b64_us', nan):8.1f}us "
        f"(x{r.get('latency_b64_ratio', nan):.2f} fp32, x{r.get('latency_b64_ratio_sklearn', nan):.3f} sklearn) "
        f"compile {r['compile_s']:.3f}s {r['gate']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--blocks", type=int, default=7, help="interleaved timing blocks (minimum is kept)")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # scikit-learn on one thread, like the runtimes: a fair ratio on a shared machine
    records: list[dict[str, Any]] = []
    for dataset in args.datasets.split(","):
        for family in args.families.split(","):
            start = time.perf_counter()
            rows = bench_family(dataset, family, args.blocks)
            records.extend(rows)
            for r in rows:
                log(_line(r))
            log(f"  ({time.perf_counter() - start:.1f}s)")
    import os

    context = {"load_average_1m": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count()}
    print(json.dumps({"records": records, "targets": check_targets(records), "context": context}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
