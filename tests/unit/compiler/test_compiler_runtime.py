"""The runtime interface the agent uses: one contract test run against every adapter (onnxruntime,
TFLite, and the in-memory FunctionModel), plus the load errors a device must report."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from compiler_kit import Split, fit_quietly
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from edge_agent.serving.runtime import (
    FunctionModel,
    InputError,
    LoadedModel,
    Prediction,
    RuntimeLoadError,
    available_runtimes,
    load_model,
)
from model_compiler import compile_estimator
from protocols.v1 import messages_pb2 as pb

N_FEATURES = 30  # breast_cancer


@pytest.fixture(scope="module")
def compiled(cancer: Split) -> Any:
    estimator = fit_quietly(
        make_pipeline(StandardScaler(), MLPClassifier((8,), max_iter=50, random_state=0)),
        cancer.x_train,
        cancer.y_train,
    )
    return compile_estimator(estimator, cancer.x_test, cancer.y_test, target="all", quantize="none")


def _memory_model() -> LoadedModel:
    def predict(x: np.ndarray) -> Prediction:
        scores = np.stack([-x[:, 0], x[:, 0]], axis=1).astype(np.float32)
        return Prediction(labels=[str(int(i)) for i in scores.argmax(axis=1)], values=None, scores=scores)

    return FunctionModel(N_FEATURES, predict)


def _adapter(compiled: Any, runtime: str) -> LoadedModel:
    if runtime == "memory":
        return _memory_model()
    built = next(b for b in compiled.artifacts if b.artifact.runtime == runtime)
    return load_model(built.artifact, built.data, compiled.fragment.io)


ADAPTERS = ["onnxruntime", "tflite", "memory"]


def test_both_real_runtimes_are_available() -> None:
    assert available_runtimes() == ["onnxruntime", "tflite"]


@pytest.mark.parametrize("runtime", ADAPTERS)
def test_predict_returns_one_label_and_score_row_per_input_row(runtime: str, compiled: Any, cancer: Split) -> None:
    model = _adapter(compiled, runtime)
    assert model.n_features == N_FEATURES
    for rows in (1, 7, 64):
        prediction = model.predict(cancer.x_test[:rows])
        assert prediction.labels is not None and len(prediction.labels) == rows
        assert set(prediction.labels) <= {"0", "1"}
        assert prediction.scores is not None and prediction.scores.shape == (rows, 2)
        assert prediction.scores.dtype == np.float32


@pytest.mark.parametrize("runtime", ADAPTERS)
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda: np.zeros((3, N_FEATURES - 1), np.float32), f"expected shape (rows>=1, {N_FEATURES}), got (3, 29)"),
        (lambda: np.zeros(N_FEATURES, np.float32), "got (30,)"),
        (lambda: np.zeros((0, N_FEATURES), np.float32), "got (0, 30)"),
        (lambda: np.full((2, N_FEATURES), "a"), "expected a numeric (float32) tensor"),
        (lambda: np.full((2, N_FEATURES), np.nan, np.float32), "NaN"),
        (lambda: np.full((2, N_FEATURES), 1e300), "infinite"),
        (lambda: [[1, 2], [3]], "not an array"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(
    runtime: str, bad: Callable[[], Any], message: str, compiled: Any
) -> None:
    model = _adapter(compiled, runtime)
    with pytest.raises(InputError, match=None) as info:
        model.predict(bad())
    assert message in str(info.value)
    assert info.value.code == "bad_input"
    assert isinstance(info.value, ValueError)
    model.predict(np.zeros((1, N_FEATURES), np.float32))  # and the model still serves afterwards


@pytest.mark.parametrize("runtime", ADAPTERS)
def test_predict_is_thread_safe(runtime: str, compiled: Any, cancer: Split) -> None:
    model = _adapter(compiled, runtime)
    batches = [cancer.x_test[i : i + 1 + i % 5] for i in range(24)]
    expected = [model.predict(b).labels for b in batches]
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for _ in range(10):
                for i, b in enumerate(batches):
                    if model.predict(b).labels != expected[i]:
                        results[worker] = ("mismatch", i)
                        return
            results[worker] = "ok"
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert results == {w: "ok" for w in range(4)}


def test_regressor_values_are_float32_rows(diabetes: Split) -> None:
    estimator = Ridge().fit(diabetes.x_train, diabetes.y_train)
    result = compile_estimator(estimator, diabetes.x_test, diabetes.y_test, target="all", quantize="none")
    for built in result.artifacts:
        prediction = load_model(built.artifact, built.data, result.fragment.io).predict(diabetes.x_test)
        assert prediction.labels is None and prediction.scores is None
        assert prediction.values is not None and prediction.values.dtype == np.float32
        assert prediction.values.shape == (len(diabetes.x_test),)


def test_labels_come_from_the_predicted_output_when_named(cancer: Split) -> None:
    """The contract's other branch: an int64 label tensor (as skl2onnx writes) turned into str."""
    from skl2onnx import to_onnx

    estimator = make_pipeline(StandardScaler(), LogisticRegression()).fit(cancer.x_train, cancer.y_train)
    options = {id(estimator[-1]): {"zipmap": False}}
    onx = to_onnx(estimator, cancer.x_train[:1].astype(np.float32), options=options, target_opset=17)
    artifact = pb.Artifact(runtime="onnxruntime", predicted_output="label", scores_output="probabilities")
    io = pb.IoSchema(task=pb.TASK_CLASSIFICATION, n_features=N_FEATURES, class_labels=["0", "1"])
    prediction = load_model(artifact, onx.SerializeToString(), io).predict(cancer.x_test)
    assert prediction.labels == [str(v) for v in estimator.predict(cancer.x_test.astype(np.float32))]


@pytest.mark.parametrize("runtime", ["onnxruntime", "tflite"])
def test_garbage_bytes_are_a_load_error(runtime: str, compiled: Any) -> None:
    built = next(b for b in compiled.artifacts if b.artifact.runtime == runtime)
    for data in (b"", b"not a model at all", built.data[: len(built.data) // 2]):
        with pytest.raises(RuntimeLoadError) as info:
            load_model(built.artifact, data, compiled.fragment.io)
        assert info.value.code == "load_failed"


@pytest.mark.parametrize("runtime", ["onnxruntime", "tflite"])
def test_schema_mismatches_are_load_errors(runtime: str, compiled: Any) -> None:
    built = next(b for b in compiled.artifacts if b.artifact.runtime == runtime)
    io = compiled.fragment.io
    wrong_width = pb.IoSchema()
    wrong_width.CopyFrom(io)
    wrong_width.n_features = 12
    with pytest.raises(RuntimeLoadError, match="n_features=12"):
        load_model(built.artifact, built.data, wrong_width)
    renamed = pb.Artifact()
    renamed.CopyFrom(built.artifact)
    renamed.scores_output = "probabilities"
    with pytest.raises(RuntimeLoadError, match="no output named"):
        load_model(renamed, built.data, io)


def test_unknown_or_missing_runtime_is_a_load_error(compiled: Any) -> None:
    built = compiled.artifacts[0]
    other = pb.Artifact()
    other.CopyFrom(built.artifact)
    other.runtime = "tensorrt"
    with pytest.raises(RuntimeLoadError, match="unknown runtime 'tensorrt'"):
        load_model(other, built.data, compiled.fragment.io)
    no_outputs = pb.Artifact(runtime="onnxruntime")
    with pytest.raises(RuntimeLoadError, match="neither a predicted nor a scores output"):
        load_model(no_outputs, built.data, compiled.fragment.io)
