"""Named, typed inputs: pipelines with a ColumnTransformer over DataFrame columns (floats, integers,
string categories) compile; the manifest names each column with its type, categories and whether it
takes a missing value; a device's encoding of named columns (edge_agent.serving.columns) gives
scikit-learn's answers, unknown categories and missing values included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from compiler_kit import fit_quietly
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC
from support.mixed_frames import CITIES, PLANS, mixed_frame, mixed_front

from edge_agent.errors import BadInputError
from edge_agent.serving.columns import encode_columns
from edge_agent.serving.runtime import load_model
from model_compiler import compile_estimator
from model_compiler.columns import encode_frame
from model_compiler.errors import UnsupportedModelError

FAMILIES = {
    "logreg": lambda: LogisticRegression(max_iter=1000),
    "mlp": lambda: MLPClassifier((16,), max_iter=300, random_state=0),
    "random_forest": lambda: RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0),
    "svc": lambda: SVC(),
}


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    x, y = mixed_frame(900)
    return x[:600], y[:600], x[600:].reset_index(drop=True), y[600:]


def _frame_with_surprises(x: pd.DataFrame) -> pd.DataFrame:
    """Held-out rows with a city and a plan never seen in training, and missing values everywhere allowed."""
    odd = x.iloc[:6].copy()
    odd.loc[0, "city"] = "marseille"
    odd.loc[1, "plan"] = np.nan
    odd.loc[2, "age"] = np.nan
    odd.loc[3, "city"] = "marseille"
    odd.loc[3, "plan"] = "enterprise"  # OrdinalEncoder after most_frequent imputation: unknown -> refused
    return odd.drop(index=3).reset_index(drop=True)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_columntransformer_on_strings_compiles_and_answers_as_sklearn(data, family: str) -> None:  # type: ignore[no-untyped-def]
    x_train, y_train, x_test, y_test = data
    # trees take the numbers unscaled: a scaled value one float32 step from a split would flip a vote
    front = mixed_front(scale=family != "random_forest")
    model = fit_quietly(make_pipeline(front, FAMILIES[family]()), x_train, y_train)
    result = compile_estimator(model, x_test, y_test, target="all", quantize="none")
    io = result.fragment.io
    assert [(c.name, c.dtype) for c in io.columns] == [
        ("age", "float"), ("visits", "integer"), ("city", "string"), ("plan", "string"),
    ]  # fmt: skip
    city, plan = io.columns[2], io.columns[3]
    assert sorted(city.categories) == CITIES and not city.refuses_unknown
    assert sorted(plan.categories) == PLANS and plan.refuses_unknown  # OrdinalEncoder(handle_unknown="error")
    assert all(c.accepts_missing for c in io.columns)  # imputers everywhere; one-hot NaN -> all zeros
    for built in result.artifacts:
        assert built.artifact.metrics["agreement"] == 1.0, built.artifact.name
        loaded = load_model(built.artifact, built.data, io)
        odd = _frame_with_surprises(x_test)
        got = loaded.predict(encode_frame(odd, list(io.columns), "odd rows")).labels
        assert got == [str(v) for v in model.predict(odd)], built.artifact.name


def test_unknown_category_refused_where_the_encoder_raises(data) -> None:  # type: ignore[no-untyped-def]
    x_train, y_train, x_test, y_test = data
    model = make_pipeline(mixed_front(city_unknown="error"), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    io = compile_estimator(model, x_test, y_test, quantize="none").fragment.io
    city = next(c for c in io.columns if c.name == "city")
    assert city.refuses_unknown and not city.accepts_missing  # OneHotEncoder(handle_unknown="error") raises on NaN
    values = {c.name: x_test[c.name].iloc[:2].tolist() for c in io.columns}
    values["city"] = ["paris", "marseille"]
    with pytest.raises(BadInputError, match="column 'city': unknown category 'marseille'"):
        encode_columns(io.columns, values)
    values["city"] = ["paris", None]
    with pytest.raises(BadInputError, match="column 'city': missing value"):
        encode_columns(io.columns, values)


def test_per_column_accepts_missing(data) -> None:  # type: ignore[no-untyped-def]
    """Only the columns an imputer (or a NaN-aware encoder) covers take a missing value."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x_train, y_train, x_test, y_test = data
    front = ColumnTransformer(
        [
            ("age", make_pipeline(SimpleImputer(), StandardScaler()), ["age"]),
            ("visits", StandardScaler(), ["visits"]),
            ("cats", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"]),
        ]
    )
    model = make_pipeline(front, LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    io = compile_estimator(model, x_test, y_test, quantize="none").fragment.io
    assert {c.name: c.accepts_missing for c in io.columns} == {"age": True, "visits": False, "city": True, "plan": True}
    assert io.accepts_missing  # the whole-input flag old agents read: some column takes NaN
    values = {c.name: x_test[c.name].iloc[:2].tolist() for c in io.columns}
    values["visits"] = [3.0, float("nan")]
    with pytest.raises(BadInputError, match="column 'visits': missing value"):
        encode_columns(io.columns, values)
    values["visits"] = [3.0, 4.5]
    with pytest.raises(BadInputError, match="column 'visits' \\(integer\\)"):
        encode_columns(io.columns, values)


def test_string_columns_are_profiled_per_category(data) -> None:  # type: ignore[no-untyped-def]
    x_train, y_train, x_test, y_test = data
    model = make_pipeline(mixed_front(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    fragment = compile_estimator(model, x_test, y_test, quantize="none", reference_X=x_train).fragment
    city = next(f for f in fragment.reference.features if f.name == "city")
    assert len(city.counts) == len(city.categories) + 1  # the last bin: unknown categories
    expected = [int((x_train["city"] == c).sum()) for c in city.categories]
    assert list(city.counts) == [*expected, 0]
    plan = next(f for f in fragment.reference.features if f.name == "plan")
    assert sum(plan.counts) == int(x_train["plan"].notna().sum())  # a missing value counts in no bin
    for vector in fragment.self_test.vectors:  # synthetic vectors hold whole category codes
        codes = np.asarray(vector.input)[[2, 3]]
        assert np.array_equal(codes, np.round(codes))


def test_hist_gradient_boosting_on_string_categories(data) -> None:  # type: ignore[no-untyped-def]
    x_train, y_train, x_test, y_test = data
    typed = x_train.astype({"city": "category", "plan": "category"})
    model = HistGradientBoostingClassifier(max_iter=30, categorical_features="from_dtype", random_state=0)
    model.fit(typed, y_train)
    held_out = x_test.astype({"city": "category", "plan": "category"})
    result = compile_estimator(model, held_out, y_test, quantize="none")
    assert result.artifacts[0].artifact.metrics["agreement"] == 1.0
    io = result.fragment.io
    assert [c.dtype for c in io.columns] == ["float", "integer", "string", "string"]
    assert all(c.accepts_missing and not c.refuses_unknown for c in io.columns)  # HGB: unknown/NaN -> missing


def test_strings_need_a_dataframe(data) -> None:  # type: ignore[no-untyped-def]
    x_train, y_train, x_test, y_test = data
    model = make_pipeline(mixed_front(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    with pytest.raises(UnsupportedModelError, match="DataFrame"):
        compile_estimator(model, np.zeros((3, 4)), y_test[:3])


def test_multilabel_mlp_compiles_gates_and_serves() -> None:
    """MLPClassifier on a 2-D indicator y: one sigmoid per label; the artifact outputs the probabilities,
    the agent labels each row with its labels above one half (as scikit-learn's predict), every target."""
    from sklearn.datasets import make_multilabel_classification
    from sklearn.preprocessing import StandardScaler

    from edge_agent.serving.selftest import run_self_test
    from model_compiler.compiler import label_sets
    from protocols.v1 import messages_pb2 as pb

    x, y = make_multilabel_classification(n_samples=600, n_features=10, n_classes=4, random_state=0)
    model = fit_quietly(
        make_pipeline(StandardScaler(), MLPClassifier((24,), max_iter=300, random_state=0)), x[:400], y[:400]
    )
    result = compile_estimator(model, x[400:], y[400:], target="all", quantize="none")
    io = result.fragment.io
    assert io.task == pb.TASK_MULTILABEL and list(io.class_labels) == ["0", "1", "2", "3"]
    assert {b.artifact.format for b in result.artifacts} == {pb.ARTIFACT_FORMAT_ONNX, pb.ARTIFACT_FORMAT_TFLITE}
    rows = x[400:].astype(np.float32)
    expected = label_sets(model.predict(rows), list(io.class_labels))
    assert "" in expected and any("," in e for e in expected)  # rows with no label and with several
    # its output drift reference: each label's rows on among the held-out rows (no single-label histogram)
    rates = result.fragment.reference.label_rates
    assert list(rates.labels) == list(io.class_labels) and rates.rows == len(rows)
    assert list(rates.positives) == (model.predict(rows) > 0.5).sum(axis=0).tolist()
    assert not result.fragment.reference.predictions.labels
    for built in result.artifacts:
        assert built.artifact.metrics["agreement"] == 1.0
        loaded = load_model(built.artifact, built.data, io)
        prediction = loaded.predict(rows)
        assert prediction.labels == expected
        np.testing.assert_allclose(prediction.values, model.predict_proba(rows), atol=1e-5)
        assert run_self_test(loaded, result.fragment.self_test, io).passed
    # an agent that predates TASK_MULTILABEL reads it as unspecified: it serves the probabilities as values
    # and checks the self-test on them
    old_io = pb.IoSchema()
    old_io.CopyFrom(io)
    old_io.task = pb.TASK_UNSPECIFIED
    old = load_model(result.artifacts[0].artifact, result.artifacts[0].data, old_io)
    assert old.predict(rows).labels is None and run_self_test(old, result.fragment.self_test, old_io).passed


def test_the_agents_telemetry_counts_string_columns_per_category(data) -> None:  # type: ignore[no-untyped-def]
    """The agent's own drift sketch (FeatureBins over the reference profile) counts a string column's
    codes per category, unknown ones in the last bin, missing ones nowhere."""
    from edge_agent.serving.telemetry import FeatureBins

    x_train, y_train, x_test, y_test = data
    model = make_pipeline(mixed_front(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    fragment = compile_estimator(model, x_test, y_test, quantize="none").fragment
    live = x_test.iloc[:50].copy()
    live.loc[:4, "city"] = "marseille"
    bins = FeatureBins.of(fragment.reference.features)
    assert bins is not None
    sketches = dict(bins.split(bins.count(encode_frame(live, list(fragment.io.columns), "live"))))
    city = next(f for f in fragment.reference.features if f.name == "city")
    expected = [int((live["city"] == c).sum()) for c in city.categories] + [5]
    assert list(sketches[city.index]) == expected
