"""Unsupported estimators and malformed inputs get clear errors, never crashes."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from compiler_kit import Split, fit_quietly
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, PoissonRegressor
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OrdinalEncoder, StandardScaler

from model_compiler import (
    BadInputError,
    CompileError,
    UnsupportedModelError,
    compile_estimator,
    load_data,
    load_estimator,
)


def _logreg(data: Split) -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(data.x_train, data.y_train)


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda: KNeighborsClassifier(metric="cosine"), "KNeighborsClassifier(metric='cosine')"),
        (lambda: KNeighborsClassifier(weights="distance"), "KNeighborsClassifier(weights='distance')"),
        (lambda: NearestCentroid(), "NearestCentroid"),
        (lambda: PoissonRegressor(), "PoissonRegressor"),
        (lambda: make_pipeline(PCA(4), LogisticRegression()), "PCA as a preprocessing step"),
        (
            lambda: make_pipeline(StandardScaler(), FunctionTransformer(np.sin), LogisticRegression()),
            "step 'functiontransformer': FunctionTransformer(func=sin): only numpy's log, log1p, exp, sqrt, abs",
        ),
        (
            lambda: make_pipeline(MinMaxScaler(), OrdinalEncoder(), LogisticRegression()),
            "step 'ordinalencoder': OrdinalEncoder after scaling",
        ),
        (
            lambda: make_pipeline(StandardScaler(), MLPRegressor(loss="poisson", max_iter=5)),
            "MLPRegressor(loss='poisson')",
        ),
        (
            lambda: HistGradientBoostingRegressor(max_iter=2, loss="poisson"),
            "HistGradientBoostingRegressor(loss='poisson')",
        ),
    ],
)
def test_unsupported_estimators_say_not_supported_yet(make: Any, what: str, cancer: Split) -> None:
    y = cancer.y_train if "oisson" not in what else cancer.x_train[:, 1]  # positive counts-like target
    estimator = fit_quietly(make(), cancer.x_train, y)
    with pytest.raises(UnsupportedModelError) as info:
        compile_estimator(estimator, cancer.x_test, cancer.y_test)
    assert str(info.value).startswith("not supported yet: ")
    assert what in str(info.value)


def test_trees_have_no_tflite_form_and_no_int8(cancer: Split) -> None:
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(cancer.x_train, cancer.y_train)
    with pytest.raises(UnsupportedModelError, match="TFLite target for RandomForestClassifier"):
        compile_estimator(forest, cancer.x_test, cancer.y_test, target="tflite")
    with pytest.raises(UnsupportedModelError, match="INT8 quantization of RandomForestClassifier"):
        compile_estimator(forest, cancer.x_test, cancer.y_test, quantize="int8")
    both = compile_estimator(forest, cancer.x_test, cancer.y_test, target="all")
    assert [b.artifact.runtime for b in both.artifacts] == ["onnxruntime"]


def test_unfitted_and_non_estimators_are_bad_input(cancer: Split) -> None:
    with pytest.raises(BadInputError, match="LogisticRegression is not fitted"):
        compile_estimator(LogisticRegression(), cancer.x_test, cancer.y_test)
    with pytest.raises(BadInputError, match="got dict"):
        compile_estimator({"weights": [1, 2]}, cancer.x_test, cancer.y_test)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (lambda s: s.x_test[:, :5], lambda s: s.y_test, "X must have shape (rows>=1, 30), got (171, 5)"),
        (lambda s: s.x_test[:0], lambda s: s.y_test[:0], "got (0, 30)"),
        (lambda s: s.x_test, lambda s: s.y_test[:10], "X has 171 rows but y has 10"),
        (lambda s: np.full_like(s.x_test, np.inf), lambda s: s.y_test, "infinite"),
        (lambda s: np.full(s.x_test.shape, "x"), lambda s: s.y_test, "X is not numeric"),
        (lambda s: np.where(s.x_test > 10, np.nan, s.x_test), lambda s: s.y_test, "cannot predict on this data"),
    ],
)
def test_malformed_data_is_bad_input(x: Any, y: Any, message: str, cancer: Split) -> None:
    estimator = _logreg(cancer)
    with pytest.raises(BadInputError) as info:
        compile_estimator(estimator, x(cancer), y(cancer))
    assert message in str(info.value)


def test_bad_options_are_compile_errors(cancer: Split) -> None:
    estimator = _logreg(cancer)
    with pytest.raises(CompileError, match="unknown target 'coreml'"):
        compile_estimator(estimator, cancer.x_test, cancer.y_test, target="coreml")
    with pytest.raises(CompileError, match="unknown quantization 'fp8'"):
        compile_estimator(estimator, cancer.x_test, cancer.y_test, quantize="fp8")


def test_mlp_with_multilabel_targets_compiles_even_with_saturated_outputs(cancer: Split) -> None:
    """Multilabel MLPs are supported now (test_compiler_columns.py); on unscaled data their logits reach
    -300, where the reference forward pass must not overflow (a warning is an error in the tests)."""
    from protocols.v1 import messages_pb2 as pb

    y = np.stack([cancer.y_train, 1 - cancer.y_train], axis=1)
    estimator = fit_quietly(MLPClassifier((4,), max_iter=5, random_state=0), cancer.x_train, y)
    result = compile_estimator(estimator, cancer.x_test, np.stack([cancer.y_test, 1 - cancer.y_test], axis=1))
    assert result.fragment.io.task == pb.TASK_MULTILABEL


def test_model_and_data_files_are_read_or_refused_clearly(tmp_path: Path, cancer: Split) -> None:
    good = tmp_path / "model.joblib"
    joblib.dump(_logreg(cancer), good)
    assert isinstance(load_estimator(good)[-1], LogisticRegression)
    with pytest.raises(BadInputError, match="model file not found"):
        load_estimator(tmp_path / "missing.joblib")
    garbage = tmp_path / "garbage.joblib"
    garbage.write_bytes(b"\x00\x01 definitely not a pickle")
    with pytest.raises(BadInputError, match="cannot read .* as a joblib-saved estimator"):
        load_estimator(garbage)
    truncated = tmp_path / "truncated.joblib"
    truncated.write_bytes(pickle.dumps(list(range(1000)))[:50])
    with pytest.raises(BadInputError):
        load_estimator(truncated)

    data = tmp_path / "data.npz"
    np.savez(data, X=cancer.x_test, y=cancer.y_test)
    x, y = load_data(data)
    assert x.shape == (171, 30) and y is not None and y.shape == (171,)
    only_x = tmp_path / "only_x.npz"
    np.savez(only_x, X=cancer.x_test)
    with pytest.raises(BadInputError, match=r"must hold arrays X and y; it has \['X'\]"):
        load_data(only_x)
    assert load_data(only_x, need_y=False)[1] is None
    flat = tmp_path / "flat.npz"
    np.savez(flat, X=np.zeros(5), y=np.zeros(5))
    with pytest.raises(BadInputError, match="2-D numeric"):
        load_data(flat)
    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, X=np.zeros((5, 2)), y=np.zeros(4))
    with pytest.raises(BadInputError, match="X has 5 rows but y has 4"):
        load_data(mismatched)
    not_npz = tmp_path / "text.npz"
    not_npz.write_text("X,y\n1,2\n")
    with pytest.raises(BadInputError, match="cannot read"):
        load_data(not_npz)
    with pytest.raises(BadInputError, match="data file not found"):
        load_data(tmp_path / "nope.npz")
