"""edge_agent.serving.selftest.run_self_test: passes the compiler's own vectors, fails (never raises) otherwise."""

from __future__ import annotations

import numpy as np
from compiler_kit import Split

from edge_agent.serving.runtime import FunctionModel, InputError, Prediction, load_model
from edge_agent.serving.selftest import run_self_test
from model_compiler import compile_estimator
from protocols.v1 import messages_pb2 as pb

CLASSIFIER_IO = pb.IoSchema(task=pb.TASK_CLASSIFICATION, n_features=2, class_labels=["a", "b"])
REGRESSOR_IO = pb.IoSchema(task=pb.TASK_REGRESSION, n_features=2)


def _classifier(flip: bool = False) -> FunctionModel:
    def predict(x: np.ndarray) -> Prediction:
        scores = np.stack([x[:, 0], x[:, 1]], axis=1).astype(np.float32)
        labels = ["ab"[int(i) ^ flip] for i in scores.argmax(axis=1)]
        return Prediction(labels=labels, values=None, scores=scores)

    return FunctionModel(2, predict)


def _regressor(offset: float = 0.0) -> FunctionModel:
    return FunctionModel(2, lambda x: Prediction(None, (x.sum(axis=1) + offset).astype(np.float32), None))


def _classifier_test(**kwargs: float) -> pb.SelfTest:
    test = pb.SelfTest(**kwargs)
    test.vectors.add(input=[1.0, 0.0], expected=[1.0, 0.0], expected_label="a")
    test.vectors.add(input=[0.0, 2.0], expected=[0.0, 2.0], expected_label="b")
    return test


def test_classifier_passes_when_labels_and_scores_match() -> None:
    result = run_self_test(_classifier(), _classifier_test(min_label_agreement=1.0, abs_tolerance=1e-6), CLASSIFIER_IO)
    assert result.passed and result.agreement == 1.0 and result.max_abs_error == 0.0


def test_classifier_fails_on_wrong_labels_and_says_which() -> None:
    result = run_self_test(_classifier(flip=True), _classifier_test(min_label_agreement=1.0), CLASSIFIER_IO)
    assert not result.passed
    assert result.agreement == 0.0
    assert "vector 0: expected 'a', got 'b'" in result.detail


def test_unset_min_agreement_means_all_labels_must_match() -> None:
    test = _classifier_test()
    test.vectors[1].expected_label = "a"  # one of two wrong: 0.5 agreement
    assert not run_self_test(_classifier(), test, CLASSIFIER_IO).passed
    test.min_label_agreement = 0.5
    assert run_self_test(_classifier(), test, CLASSIFIER_IO).passed


def test_classifier_fails_when_scores_drift_beyond_tolerance() -> None:
    test = _classifier_test(min_label_agreement=1.0, abs_tolerance=0.01)
    test.vectors[0].expected[0] = 1.5
    result = run_self_test(_classifier(), test, CLASSIFIER_IO)
    assert not result.passed and result.max_abs_error == 0.5
    assert "score error" in result.detail


def test_regressor_within_and_beyond_tolerance() -> None:
    test = pb.SelfTest(abs_tolerance=0.1)
    test.vectors.add(input=[1.0, 2.0], expected=[3.0])
    test.vectors.add(input=[0.0, 0.5], expected=[0.5])
    assert run_self_test(_regressor(0.05), test, REGRESSOR_IO).passed
    result = run_self_test(_regressor(0.2), test, REGRESSOR_IO)
    assert not result.passed and result.agreement == 0.0
    assert abs(result.max_abs_error - 0.2) < 1e-6


def test_malformed_tests_fail_without_raising() -> None:
    assert not run_self_test(_classifier(), pb.SelfTest(), CLASSIFIER_IO).passed  # no vectors
    short = pb.SelfTest()
    short.vectors.add(input=[1.0], expected_label="a")
    assert "has 1 inputs, the model takes 2" in run_self_test(_classifier(), short, CLASSIFIER_IO).detail
    wide = pb.SelfTest(abs_tolerance=1.0)
    wide.vectors.add(input=[1.0, 2.0], expected=[3.0, 4.0])
    assert "outputs per row" in run_self_test(_regressor(), wide, REGRESSOR_IO).detail
    assert "no labels" in run_self_test(_regressor(), _classifier_test(), CLASSIFIER_IO).detail


def test_a_model_that_raises_fails_the_test() -> None:
    def broken(x: np.ndarray) -> Prediction:
        raise InputError("kaput")

    result = run_self_test(FunctionModel(2, broken), _classifier_test(), CLASSIFIER_IO)
    assert not result.passed and "InputError: kaput" in result.detail


def test_compiled_vectors_pass_in_every_artifact_and_catch_a_swapped_model(digits: Split) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(digits.x_train, digits.y_train)
    result = compile_estimator(estimator, digits.x_test, digits.y_test, target="all", quantize="auto")
    test = result.fragment.self_test
    assert len(test.vectors) == 16
    assert {v.expected_label for v in test.vectors} == {str(c) for c in range(10)}  # every class exercised
    for built in result.artifacts:
        model = load_model(built.artifact, built.data, result.fragment.io)
        assert run_self_test(model, test, result.fragment.io).passed
    # a different model (other weights) behind the same schema fails the vectors
    other = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=1e-4))
    other.fit(digits.x_train, digits.y_train)
    swapped = compile_estimator(other, digits.x_test, digits.y_test, quantize="none").artifacts[0]
    model = load_model(swapped.artifact, swapped.data, result.fragment.io)
    assert not run_self_test(model, test, result.fragment.io).passed


def _rows_of(test: pb.SelfTest) -> set[tuple[float, ...]]:
    return {tuple(np.float32(v) for v in vector.input) for vector in test.vectors}


def test_vectors_are_synthetic_by_default_and_no_held_out_or_training_row_leaks(digits: Split) -> None:
    from sklearn.linear_model import LogisticRegression

    estimator = LogisticRegression(max_iter=300).fit(digits.x_train, digits.y_train)
    result = compile_estimator(estimator, digits.x_test, digits.y_test, reference_X=digits.x_train, quantize="none")
    vectors = _rows_of(result.fragment.self_test)
    real = {tuple(np.float32(v) for v in row) for row in np.vstack([digits.x_train, digits.x_test])}
    assert len(vectors) == 16 and not vectors & real
    # still a real test: every vector's label is the source model's, and several classes are exercised
    inputs = np.array([list(v.input) for v in result.fragment.self_test.vectors], dtype=np.float32)
    expected = [v.expected_label for v in result.fragment.self_test.vectors]
    assert [str(p) for p in estimator.predict(inputs)] == expected
    assert len(set(expected)) >= 3


def test_held_out_rows_only_by_explicit_choice(digits: Split) -> None:
    from sklearn.linear_model import LogisticRegression

    estimator = LogisticRegression(max_iter=300).fit(digits.x_train, digits.y_train)
    result = compile_estimator(estimator, digits.x_test, digits.y_test, quantize="none", self_test_from="heldout")
    real = {tuple(np.float32(v) for v in row) for row in digits.x_test}
    assert _rows_of(result.fragment.self_test) <= real
