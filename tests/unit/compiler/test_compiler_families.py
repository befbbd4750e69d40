"""Every supported family, compiled, loaded in the real runtime (onnxruntime / ai-edge-litert) through the
agent's own adapter, and compared with scikit-learn on rows the model was not trained on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from compiler_kit import Split, fit_quietly, sk_labels
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import (
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.naive_bayes import BernoulliNB, ComplementNB, GaussianNB, MultinomialNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
)
from sklearn.svm import SVC, SVR, LinearSVC, NuSVC, NuSVR
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from edge_agent.serving.runtime import load_model
from model_compiler import UnsupportedModelError, compile_estimator

CLASSIFIERS: dict[str, Any] = {
    "logreg": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)),
    "sgd": lambda: make_pipeline(StandardScaler(), SGDClassifier(random_state=0)),
    "linear_svc": lambda: make_pipeline(MinMaxScaler(), LinearSVC(random_state=0)),
    "mlp": lambda: make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=100, random_state=0)),
    "mlp_tanh": lambda: make_pipeline(
        MinMaxScaler(), MLPClassifier((8, 8), activation="tanh", max_iter=80, random_state=0)
    ),
    "decision_tree": lambda: DecisionTreeClassifier(max_depth=8, random_state=0),
    "random_forest": lambda: RandomForestClassifier(n_estimators=8, random_state=0),
    "random_forest_shallow": lambda: RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0),
    "extra_trees": lambda: ExtraTreesClassifier(n_estimators=8, random_state=0),
    "gradient_boosting": lambda: GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0),
    "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(max_iter=5, random_state=0),
    "scaled_forest": lambda: make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=4, random_state=0)),
}
REGRESSORS: dict[str, Any] = {
    "linear_regression": lambda: LinearRegression(),
    "ridge": lambda: make_pipeline(StandardScaler(), Ridge()),
    "sgd": lambda: make_pipeline(StandardScaler(), SGDRegressor(random_state=0)),
    "mlp": lambda: make_pipeline(
        StandardScaler(), MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=0)
    ),
    "decision_tree": lambda: DecisionTreeRegressor(max_depth=5, random_state=0),
    "random_forest": lambda: RandomForestRegressor(n_estimators=5, random_state=0),
    "extra_trees": lambda: ExtraTreesRegressor(n_estimators=5, random_state=0),
    "gradient_boosting": lambda: GradientBoostingRegressor(n_estimators=10, random_state=0),
    "hist_gradient_boosting": lambda: HistGradientBoostingRegressor(max_iter=10, random_state=0),
}
DENSE = {"logreg", "sgd", "linear_svc", "mlp", "mlp_tanh", "linear_regression", "ridge"}
# (name, target): tree ensembles have no TFLite form (refusal tested in test_compiler_errors)
CLASSIFIER_CASES = [(n, t) for n in sorted(CLASSIFIERS) for t in ("onnx", "tflite") if t == "onnx" or n in DENSE]
REGRESSOR_CASES = [(n, t) for n in sorted(REGRESSORS) for t in ("onnx", "tflite") if t == "onnx" or n in DENSE]


def _compiled_predictions(estimator: Any, data: Split, target: str, quantize: str) -> list[Any]:
    result = compile_estimator(estimator, data.x_test, data.y_test, target=target, quantize=quantize)
    assert [b.artifact.runtime for b in result.artifacts] == ["onnxruntime" if target == "onnx" else "tflite"]
    built = result.artifacts[0]
    model = load_model(built.artifact, built.data, result.fragment.io)
    assert model.runtime == built.artifact.runtime
    return [model.predict(data.x_test), result]


@pytest.mark.parametrize(("name", "target"), CLASSIFIER_CASES)
@pytest.mark.parametrize("dataset", ["digits", "cancer"])
def test_classifier_artifact_predicts_like_sklearn(
    name: str, target: str, dataset: str, request: pytest.FixtureRequest
) -> None:
    data: Split = request.getfixturevalue(dataset)
    estimator = fit_quietly(CLASSIFIERS[name](), data.x_train, data.y_train)
    prediction, result = _compiled_predictions(estimator, data, target, "none")
    x32 = data.x_test.astype(np.float32)  # what a device sends
    expected = sk_labels(estimator, x32)
    agreement = np.mean(np.array(prediction.labels) == np.array(expected))
    assert agreement >= 0.99, f"{name}/{target}: agreement {agreement}"
    assert result.artifacts[0].artifact.metrics["agreement"] == pytest.approx(agreement)
    assert prediction.scores.shape == (len(data.x_test), len(estimator.classes_))
    if hasattr(estimator, "predict_proba") and name != "sgd":
        np.testing.assert_allclose(prediction.scores, estimator.predict_proba(x32), atol=2e-4)
    if name not in DENSE and name != "scaled_forest":  # trees split exactly like sklearn on float32 inputs
        assert agreement == 1.0


@pytest.mark.parametrize(("name", "target"), REGRESSOR_CASES)
def test_regressor_artifact_predicts_like_sklearn(name: str, target: str, diabetes: Split) -> None:
    estimator = fit_quietly(REGRESSORS[name](), diabetes.x_train, diabetes.y_train)
    prediction, _ = _compiled_predictions(estimator, diabetes, target, "none")
    expected = estimator.predict(diabetes.x_test.astype(np.float32))  # what a device sends
    assert prediction.values.shape == expected.shape
    np.testing.assert_allclose(prediction.values, expected, rtol=1e-4, atol=1e-3 * np.abs(expected).max())


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_int8_mlp_keeps_accuracy_and_shrinks(target: str, digits: Split) -> None:
    estimator = fit_quietly(
        make_pipeline(StandardScaler(), MLPClassifier((64, 32), max_iter=60, random_state=0)),
        digits.x_train,
        digits.y_train,
    )
    fp32 = compile_estimator(estimator, digits.x_test, digits.y_test, target=target, quantize="none")
    int8 = compile_estimator(
        estimator, digits.x_test, digits.y_test, target=target, quantize="int8", reference_X=digits.x_train
    )
    small, big = int8.artifacts[0].artifact, fp32.artifacts[0].artifact
    assert small.quantization == "int8" and big.quantization == "none"
    assert small.size_bytes < 0.35 * big.size_bytes
    assert small.metrics["agreement"] >= 0.99
    assert small.metrics["accuracy_delta_pts"] >= -0.5
    model = load_model(small, int8.artifacts[0].data, int8.fragment.io)
    labels = model.predict(digits.x_test).labels
    assert np.mean(np.array(labels) == np.array(sk_labels(estimator, digits.x_test))) >= 0.99


def test_all_targets_give_onnx_and_tflite_for_dense_models(cancer: Split) -> None:
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(cancer.x_train, cancer.y_train)
    result = compile_estimator(estimator, cancer.x_test, cancer.y_test, target="all", quantize="none")
    assert sorted(b.artifact.runtime for b in result.artifacts) == ["onnxruntime", "tflite"]
    assert list(result.fragment.io.class_labels) == ["0", "1"]


def _mixed_data(split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """breast_cancer plus a categorical column (values 0..3), with NaN holes in two numeric columns."""
    rng = np.random.default_rng(0)

    def add(x: np.ndarray) -> np.ndarray:
        x = np.column_stack([x[:, :8], (x[:, 0] > np.median(x[:, 0])).astype(float) + 2 * (x[:, 1] > 20)])
        holes = rng.random((len(x), 2)) < 0.1
        x[:, 2:4][holes] = np.nan
        return x

    return add(split.x_train), add(split.x_test), split.y_train, split.y_test


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_pipeline_with_imputer_and_one_hot_encoder(target: str, cancer: Split) -> None:
    x_train, x_test, y_train, y_test = _mixed_data(cancer)
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    prep = ColumnTransformer([("num", numeric, list(range(8))), ("cat", OneHotEncoder(handle_unknown="ignore"), [8])])
    estimator = make_pipeline(prep, LogisticRegression(max_iter=500)).fit(x_train, y_train)
    result = compile_estimator(estimator, x_test, y_test, target=target, quantize="none")
    assert result.fragment.io.accepts_missing
    model = load_model(result.artifacts[0].artifact, result.artifacts[0].data, result.fragment.io)
    prediction = model.predict(x_test)
    np.testing.assert_allclose(prediction.scores, estimator.predict_proba(x_test), atol=1e-4)
    unseen = x_test[:3].copy()
    unseen[:, 8] = 7.0  # a category never seen in training: all-zero one-hot, like handle_unknown="ignore"
    np.testing.assert_allclose(model.predict(unseen).scores, estimator.predict_proba(unseen), atol=1e-4)


def test_hist_gradient_boosting_routes_missing_values_like_sklearn(cancer: Split) -> None:
    x_train = cancer.x_train.copy()
    x_train[::7, 0] = np.nan
    x_test = cancer.x_test.copy()
    x_test[::5, 0] = np.nan
    estimator = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(x_train, cancer.y_train)
    result = compile_estimator(estimator, x_test, cancer.y_test, quantize="none")
    assert result.fragment.io.accepts_missing
    model = load_model(result.artifacts[0].artifact, result.artifacts[0].data, result.fragment.io)
    assert model.predict(x_test).labels == sk_labels(estimator, x_test)


def _rich_preprocessing() -> Any:
    """Every numeric preprocessing step the compiler traces, in one ColumnTransformer."""
    return ColumnTransformer(
        [
            ("robust", RobustScaler(), [0, 1]),
            ("maxabs", MaxAbsScaler(), [4, 5]),
            ("log", make_pipeline(FunctionTransformer(np.log1p), StandardScaler()), [6, 7]),
            ("clip", make_pipeline(StandardScaler(), MinMaxScaler(clip=True)), [0, 4]),
            ("indicator", SimpleImputer(strategy="median", add_indicator=True), [2, 3]),
            # scaled, then one-hot encoded, with the missing value as a category of its own
            ("cat", make_pipeline(StandardScaler(), OneHotEncoder(handle_unknown="ignore")), [8]),
        ]
    )


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_scalers_functions_and_one_hot_after_scaling(target: str, cancer: Split) -> None:
    x_train, x_test, y_train, y_test = _mixed_data(cancer)
    x_train[::11, 8], x_test[::11, 8] = np.nan, np.nan
    x_test[:4, 0] = 1e6  # outside the training range: the clipped branch stays within (0, 1)
    estimator = make_pipeline(_rich_preprocessing(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    result = compile_estimator(estimator, x_test, y_test, target=target, quantize="none")
    assert result.fragment.io.accepts_missing
    model = load_model(result.artifacts[0].artifact, result.artifacts[0].data, result.fragment.io)
    # float64 in: on float32 input scikit-learn scales in float32 and misses its own float64 categories
    np.testing.assert_allclose(model.predict(x_test).scores, estimator.predict_proba(x_test), atol=1e-4)


def _ordinal_pipeline(split: Split) -> tuple[Any, np.ndarray, np.ndarray]:
    x_train, x_test, y_train, _ = _mixed_data(split)
    prep = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), list(range(8))),
            ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), [8]),
        ]
    )
    return make_pipeline(prep, LogisticRegression(max_iter=500)).fit(x_train, y_train), x_test, x_train


def test_ordinal_encoder_compiles_to_onnx_and_all_notes_the_missing_tflite(cancer: Split) -> None:
    estimator, x_test, _ = _ordinal_pipeline(cancer)
    result = compile_estimator(estimator, x_test, cancer.y_test, target="all", quantize="none")
    assert [b.artifact.runtime for b in result.artifacts] == ["onnxruntime"]
    note = result.fragment.lineage["compiler_notes"]
    assert "no TFLite artifact" in note and "OrdinalEncoder" in note
    assert result.report.notes == [note]
    assert f"note: {note}" in result.report.table()
    model = load_model(result.artifacts[0].artifact, result.artifacts[0].data, result.fragment.io)
    unseen = x_test[:5].copy()
    unseen[:, 8] = 9.0  # never seen: encoded as -1, as the encoder was told
    for rows in (x_test, unseen):
        np.testing.assert_allclose(model.predict(rows).scores, estimator.predict_proba(rows), atol=1e-4)
    with pytest.raises(UnsupportedModelError, match="TFLite target for LogisticRegression .*OrdinalEncoder"):
        compile_estimator(estimator, x_test, cancer.y_test, target="tflite")


# SVMs, k-NN and naive Bayes go through skl2onnx, behind the compiler's own preprocessing
CONVERTED_CLASSIFIERS: dict[str, Any] = {
    "svc_rbf": lambda: make_pipeline(StandardScaler(), SVC()),
    "svc_linear": lambda: make_pipeline(StandardScaler(), SVC(kernel="linear")),
    "svc_poly": lambda: make_pipeline(StandardScaler(), SVC(kernel="poly", degree=2)),
    "svc_sigmoid": lambda: make_pipeline(StandardScaler(), SVC(kernel="sigmoid", gamma=0.01)),
    "nu_svc": lambda: make_pipeline(MinMaxScaler(), NuSVC(nu=0.2)),
    "knn": lambda: make_pipeline(StandardScaler(), KNeighborsClassifier()),
    "knn_manhattan": lambda: make_pipeline(MaxAbsScaler(), KNeighborsClassifier(7, metric="manhattan")),
    "gaussian_nb": lambda: GaussianNB(),
    "multinomial_nb": lambda: make_pipeline(MinMaxScaler(), MultinomialNB()),
    "bernoulli_nb": lambda: make_pipeline(StandardScaler(), BernoulliNB()),
    "complement_nb": lambda: make_pipeline(MinMaxScaler(), ComplementNB()),
}
CONVERTED_REGRESSORS: dict[str, Any] = {
    "svr_rbf": lambda: make_pipeline(StandardScaler(), SVR(C=50.0)),
    "svr_linear": lambda: make_pipeline(StandardScaler(), SVR(kernel="linear", C=10.0)),
    "nu_svr": lambda: make_pipeline(StandardScaler(), NuSVR(C=50.0)),
    "knn": lambda: make_pipeline(StandardScaler(), KNeighborsRegressor(5)),
}


@pytest.mark.parametrize("name", sorted(CONVERTED_CLASSIFIERS))
@pytest.mark.parametrize("dataset", ["digits", "cancer"])
def test_converted_classifier_names_its_labels_and_predicts_like_sklearn(
    name: str, dataset: str, request: pytest.FixtureRequest
) -> None:
    data: Split = request.getfixturevalue(dataset)
    estimator = fit_quietly(CONVERTED_CLASSIFIERS[name](), data.x_train, data.y_train)
    prediction, result = _compiled_predictions(estimator, data, "onnx", "auto")
    artifact = result.artifacts[0].artifact
    assert (artifact.quantization, artifact.predicted_output, artifact.scores_output) == ("none", "label", "scores")
    assert [(o.name, o.dtype) for o in result.fragment.io.outputs] == [("label", "int64"), ("scores", "float32")]
    x32 = data.x_test.astype(np.float32)  # what a device sends
    agreement = np.mean(np.array(prediction.labels) == np.array(sk_labels(estimator, x32)))
    assert agreement >= 0.99, f"{name}: agreement {agreement}"
    assert prediction.scores.shape[0] == len(data.x_test)
    if name.endswith("_nb"):
        np.testing.assert_allclose(prediction.scores, estimator.predict_proba(x32), atol=1e-4)
    if name.startswith("knn"):  # equidistant neighbours (digits' integer pixels) may be picked in another order
        same = np.isclose(prediction.scores, estimator.predict_proba(x32), atol=1e-4).all(axis=1)
        assert same.mean() >= 0.99


@pytest.mark.parametrize("name", sorted(CONVERTED_REGRESSORS))
def test_converted_regressor_predicts_like_sklearn(name: str, diabetes: Split) -> None:
    estimator = fit_quietly(CONVERTED_REGRESSORS[name](), diabetes.x_train, diabetes.y_train)
    prediction, result = _compiled_predictions(estimator, diabetes, "onnx", "auto")
    assert result.artifacts[0].artifact.predicted_output == "values"
    expected = estimator.predict(diabetes.x_test.astype(np.float32))
    np.testing.assert_allclose(prediction.values, expected, rtol=1e-4, atol=1e-3 * np.abs(expected).max())


def test_converted_families_behind_imputer_and_one_hot_with_string_labels(cancer: Split) -> None:
    x_train, x_test, y_train, y_test = _mixed_data(cancer)
    names = np.array(["benign", "malignant"])
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    prep = ColumnTransformer([("num", numeric, list(range(8))), ("cat", OneHotEncoder(handle_unknown="ignore"), [8])])
    estimator = make_pipeline(prep, SVC()).fit(x_train, names[y_train])
    result = compile_estimator(estimator, x_test, names[y_test], target="all")
    assert [b.artifact.runtime for b in result.artifacts] == ["onnxruntime"]
    assert "no TFLite artifact: SVC compiles to ONNX only" in result.fragment.lineage["compiler_notes"]
    assert result.fragment.io.outputs[0].dtype == "string"
    model = load_model(result.artifacts[0].artifact, result.artifacts[0].data, result.fragment.io)
    assert model.predict(x_test).labels == sk_labels(estimator, x_test.astype(np.float32))
    with pytest.raises(UnsupportedModelError, match="TFLite target for SVC"):
        compile_estimator(estimator, x_test, names[y_test], target="tflite")
    with pytest.raises(UnsupportedModelError, match="INT8 quantization of SVC"):
        compile_estimator(estimator, x_test, names[y_test], quantize="int8")


def _categorical_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two categorical columns (12 and 40 categories, some missing) that decide the target with a numeric one."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4))
    x[:, 0] = rng.integers(0, 12, n)
    x[:, 2] = rng.integers(0, 40, n) * 2.0  # categories need not be 0..k-1
    x[::13, 0] = np.nan
    x[::7, 3] = np.nan
    label = ((x[:, 0] % 3 == 0) ^ (x[:, 1] > 0.5)) | (x[:, 2] % 10 == 2)
    value = x[:, 1] * np.nan_to_num(x[:, 0]) + (x[:, 2] % 6)
    return x, label.astype(int), value


@pytest.mark.parametrize("kind", ["classifier", "regressor", "multiclass"])
def test_hist_gradient_boosting_with_categorical_features(kind: str) -> None:
    x_train, label_train, value_train = _categorical_data(1500, 0)
    x_test, label_test, value_test = _categorical_data(600, 1)
    x_test[:7, 0] = 99.0  # a category never seen in training: routed like a missing value, as scikit-learn does
    x_test[7:12, 2] = 3.0
    make = HistGradientBoostingRegressor if kind == "regressor" else HistGradientBoostingClassifier
    estimator = make(max_iter=15, categorical_features=[0, 2], random_state=0)
    y_train, y_test = (value_train, value_test) if kind == "regressor" else (label_train, label_test)
    if kind == "multiclass":
        y_train, y_test = y_train + (x_train[:, 1] > 0.8), y_test + (x_test[:, 1] > 0.8)
    estimator.fit(x_train, y_train)
    assert any(p.nodes["is_categorical"].any() for stage in estimator._predictors for p in stage)
    result = compile_estimator(estimator, x_test, y_test, target="all")
    assert [b.artifact.runtime for b in result.artifacts] == ["onnxruntime"]
    assert result.report.estimator == make.__name__ and result.fragment.io.accepts_missing
    model = load_model(result.artifacts[0].artifact, result.artifacts[0].data, result.fragment.io)
    prediction = model.predict(x_test)
    x32 = x_test.astype(np.float32)
    if kind == "regressor":
        np.testing.assert_allclose(prediction.values, estimator.predict(x32), rtol=1e-5, atol=1e-5)
    else:
        assert prediction.labels == sk_labels(estimator, x32)  # trees split exactly like scikit-learn
        np.testing.assert_allclose(prediction.scores, estimator.predict_proba(x32), atol=1e-5)


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_clipped_scaler_keeps_missing_values_for_the_imputer_after_it(target: str, cancer: Split) -> None:
    """numpy's clip keeps NaN (so the imputer after it fills them); TFLite's MAXIMUM would not."""
    x_train, x_test = cancer.x_train.copy(), cancer.x_test.copy()
    x_train[::5, 0], x_test[::5, 0], x_test[1::5, 3] = np.nan, np.nan, np.nan
    estimator = make_pipeline(
        MinMaxScaler(clip=True), SimpleImputer(strategy="constant", fill_value=-3.0), LogisticRegression(max_iter=500)
    ).fit(x_train, cancer.y_train)
    result = compile_estimator(estimator, x_test, cancer.y_test, target=target, quantize="none")
    model = load_model(result.artifacts[0].artifact, result.artifacts[0].data, result.fragment.io)
    np.testing.assert_allclose(model.predict(x_test).scores, estimator.predict_proba(x_test), atol=1e-5)
