"""Preprocessing folded into tree splits (model_compiler.tree_fold): the artifact reads the raw input and
gives, on every input (NaN, unknown categories and values on either side of every threshold included),
exactly the scores of the artifact that computes the preprocessing first."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from model_compiler import compile_estimator
from model_compiler.families import analyse
from model_compiler.onnx_forest import forest_to_onnx
from model_compiler.onnx_pack import pack_attribute_ints
from model_compiler.segments import Op
from model_compiler.tree_fold import fold_preprocessing, raw_thresholds


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four numeric columns on different scales with 10 % holes, a 5-level category coded 0, 10, ..., 40."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(0, 1, rows), rng.normal(50, 20, rows), rng.exponential(3, rows),
                         rng.uniform(-1e-3, 1e-3, rows), rng.integers(0, 5, rows) * 10.0])  # fmt: skip
    y = ((x[:, 0] + x[:, 1] / 20 - x[:, 2] / 3 + (x[:, 4] == 20) + 1e3 * x[:, 3]) > 2.5).astype(int)
    x[:, :4][rng.random((rows, 4)) < 0.1] = np.nan
    return x, y


def _front(scaler: object) -> ColumnTransformer:
    return ColumnTransformer([
        ("num", make_pipeline(scaler, SimpleImputer(strategy="median", add_indicator=True)), [0, 1, 2, 3]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), [4]),
    ])  # fmt: skip


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    data = pack_attribute_ints(model.SerializeToString())
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[-1]


def _probes(forest: object, x: np.ndarray) -> np.ndarray:
    """Held-out rows, and rows that put each column on, just below and just above each raw threshold of the
    folded forest, NaN, an unknown category and the extremes."""
    folded = fold_preprocessing(forest)  # type: ignore[arg-type]
    assert folded is not None
    values: dict[int, set[float]] = {j: {np.nan, -3.0e38, 3.0e38, 0.0, 35.0} for j in range(x.shape[1])}
    for tree in folded.trees:
        for i in np.flatnonzero(tree.left >= 0).tolist():
            t = np.float32(tree.threshold[i])
            if np.isfinite(t):
                values[int(tree.feature[i])].update(
                    float(v) for v in (t, np.nextafter(t, np.float32(-np.inf)), np.nextafter(t, np.float32(np.inf)))
                )
    rows = [x]
    for j, vs in values.items():
        for v in vs:
            probe = x[:20].copy()
            probe[:, j] = v
            rows.append(probe)
    return np.concatenate(rows).astype(np.float32)


@pytest.mark.parametrize(
    ("make", "scaler"),
    [
        (lambda: DecisionTreeClassifier(random_state=0), StandardScaler()),
        (lambda: RandomForestClassifier(n_estimators=15, random_state=0), MinMaxScaler()),
        (lambda: GradientBoostingClassifier(n_estimators=20, random_state=0), StandardScaler()),
    ],
    ids=["tree-standard", "forest-minmax", "boosting-standard"],
)
def test_a_folded_front_splits_exactly_as_the_graph_did(make: object, scaler: object) -> None:
    x, y = _data(1500, seed=0)
    estimator = make_pipeline(_front(scaler), make()).fit(x[:1000], y[:1000])  # type: ignore[operator]
    forest = analyse(estimator).model
    folded, graph = forest_to_onnx(forest), forest_to_onnx(forest, fold=False)
    first = folded.graph.node[0]  # the raw input goes straight into the trees
    assert first.op_type == "TreeEnsemble" and list(first.input) == [folded.graph.input[0].name]
    assert graph.graph.node[0].op_type != "TreeEnsemble"
    probes = _probes(forest, x[1000:])
    np.testing.assert_array_equal(_run(folded, probes), _run(graph, probes))
    assert len(folded.SerializeToString()) < len(graph.SerializeToString())


def test_the_compiler_keeps_scikit_learns_predictions_with_a_folded_front() -> None:
    x, y = _data(1500, seed=1)
    estimator = make_pipeline(_front(StandardScaler()), DecisionTreeClassifier(random_state=0)).fit(x[:1000], y[:1000])
    result = compile_estimator(estimator, x[1000:], y[1000:], target="onnx", quantize="none")
    assert result.artifacts[0].artifact.metrics["agreement"] == 1.0
    assert result.fragment.io.accepts_missing  # NaN still means "missing": the splits route it as imputed


def test_raw_thresholds_are_exact_for_every_float32() -> None:
    """chain(x) <= t exactly when x <= t', checked on random float32s and on t' and its neighbours."""
    rng = np.random.default_rng(0)
    chain = [Op("fill", np.array([1.5], np.float32)), Op("sub", np.array([0.37], np.float32)),
             Op("div", np.array([3.3e-3], np.float32)), Op("mul", np.array([1.7], np.float32)),
             Op("add", np.array([-2.0], np.float32))]  # fmt: skip
    thresholds = np.concatenate([rng.normal(0, 300, 200), [-np.inf, np.inf, 0.0, 3e38, -3e38]]).astype(np.float32)
    raw = raw_thresholds(chain, thresholds)

    def f(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, np.float32)
        v = (v - np.float32(0.37)) / np.float32(3.3e-3) * np.float32(1.7)
        return (v + np.float32(-2.0)).astype(np.float32)

    xs = np.concatenate([rng.normal(0, 1, 5000), rng.normal(0, 1e3, 5000)]).astype(np.float32)
    with np.errstate(over="ignore"):
        for t, r in zip(thresholds, raw, strict=True):
            near = np.array([r, np.nextafter(r, np.float32(-np.inf)), np.nextafter(r, np.float32(np.inf))], np.float32)
            probe = np.concatenate([xs, near[np.isfinite(near)]])
            np.testing.assert_array_equal(f(probe) <= t, probe <= r)
