"""Smaller tree artifacts: each saving is lossless, so the small artifact is the same model to a runtime."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from compiler_kit import Split
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.tree import DecisionTreeRegressor

from model_compiler.families import analyse
from model_compiler.forest import Tree
from model_compiler.onnx_forest import forest_to_onnx
from model_compiler.onnx_pack import _packed_varints, pack_attribute_ints


def _run(data: bytes, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})


def test_packed_varints_read_back_by_protobuf() -> None:
    values = [0, 1, 127, 128, 300, 2**31, 2**40, -1, -5]
    payload = _packed_varints(np.array(values, dtype=np.int64))
    field = bytes([8 << 3 | 2, len(payload)]) + payload  # AttributeProto.ints, packed (length < 128 here)
    assert list(onnx.AttributeProto.FromString(field).ints) == values


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomForestClassifier(n_estimators=10, random_state=0),
        lambda: HistGradientBoostingClassifier(max_iter=10, random_state=0),
    ],
    ids=["forest", "hgb"],
)
def test_packed_ints_same_model_fewer_bytes(digits: Split, make: object) -> None:
    estimator = make().fit(digits.x_train, digits.y_train)  # type: ignore[operator]
    model = forest_to_onnx(analyse(estimator).model)
    plain = model.SerializeToString(deterministic=True)
    packed = pack_attribute_ints(plain)
    assert onnx.load_from_string(packed) == model  # protobuf reads the packed form as the same message
    assert len(packed) < 0.8 * len(plain)
    for a, b in zip(_run(plain, digits.x_test), _run(packed, digits.x_test), strict=True):
        np.testing.assert_array_equal(a, b)


def _ensemble(model: onnx.ModelProto) -> dict[str, object]:
    node = next(n for n in model.graph.node if n.op_type == "TreeEnsemble")
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_equal_leaves_stored_once_across_trees(digits: Split) -> None:
    estimator = RandomForestClassifier(n_estimators=10, random_state=0).fit(digits.x_train, digits.y_train)
    forest = analyse(estimator).model
    attrs = _ensemble(forest_to_onnx(forest))
    sk_leaves = sum(int((t.tree_.children_left == -1).sum()) for t in estimator.estimators_)
    pairs = list(zip(attrs["leaf_targetids"], onnx.numpy_helper.to_array(attrs["leaf_weights"]).tolist(), strict=True))
    assert len(pairs) == len(set(pairs)) < sk_leaves / 5  # fully grown: most leaves are "class c, weight 1"
    scores = _run(pack_attribute_ints(forest_to_onnx(forest).SerializeToString()), digits.x_test)[-1]
    np.testing.assert_allclose(scores, estimator.predict_proba(digits.x_test.astype(np.float32)), atol=1e-6)
    assert (scores.argmax(axis=1) == estimator.predict_proba(digits.x_test.astype(np.float32)).argmax(axis=1)).all()


def test_split_with_equal_sides_is_dropped() -> None:
    two_sides = Tree(
        feature=np.array([0, 1, -1, -1, -1]),
        threshold=np.array([0.5, 0.5, 0, 0, 0], np.float32),
        left=np.array([1, 3, -1, -1, -1]),
        right=np.array([2, 4, -1, -1, -1]),
        missing_left=np.zeros(5, bool),
        value=np.array([[0.0], [0.0], [2.0], [1.0], [1.0]]),  # node 1's sides both add 1.0
        targets=np.array([0]),
    )
    fitted = DecisionTreeRegressor(max_depth=1).fit([[0.0, 0.0], [1.0, 1.0]], [0.0, 1.0])
    forest = replace(analyse(fitted).model, trees=(two_sides,), average=False)
    model = forest_to_onnx(forest)
    attrs = _ensemble(model)
    assert attrs["nodes_featureids"] == [0]  # node 1 is gone, node 0 remains
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    np.testing.assert_array_equal(_run(model.SerializeToString(), x)[0].ravel(), [1.0, 1.0, 2.0])


def _with_holes_and_category(x: np.ndarray, seed: int, levels: int) -> np.ndarray:
    """x with 10% NaN and a last column of category codes 0..levels-1 (NaN-free: holes are added apart)."""
    rng = np.random.default_rng(seed)
    out = x.copy()
    out[rng.random(out.shape) < 0.1] = np.nan
    return np.column_stack([out, rng.integers(0, levels, len(x)).astype(float) * 10.0])


def test_nan_and_unknown_categories_routed_by_split_modes_not_flags(cancer: Split) -> None:
    """NaN goes where scikit-learn sends it through each split's mode (GT with sides swapped, a set or its
    complement), so the per-node missing flags are not stored; unknown categories and NaN in the
    categorical column follow the same path as in scikit-learn."""
    x_train = _with_holes_and_category(cancer.x_train, 0, 6)
    categorical = x_train.shape[1] - 1
    estimator = HistGradientBoostingClassifier(max_iter=30, random_state=0, categorical_features=[categorical])
    estimator.fit(x_train, cancer.y_train)
    x_test = _with_holes_and_category(cancer.x_test, 1, 8)  # codes 60 and 70: categories never seen
    x_test[::7, categorical] = np.nan
    model = forest_to_onnx(analyse(estimator).model)
    attrs = _ensemble(model)
    assert "nodes_missing_value_tracks_true" not in attrs
    assert set(onnx.numpy_helper.to_array(attrs["nodes_modes"]).tolist()) >= {0, 3}  # LEQ and NaN-left GT
    scores = _run(pack_attribute_ints(model.SerializeToString()), x_test)[-1]
    expected = estimator.predict_proba(x_test.astype(np.float32))
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert (scores.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_no_missing_flags_where_an_imputer_fills_every_nan(cancer: Split) -> None:
    x_train = _with_holes_and_category(cancer.x_train, 0, 2)[:, :-1]
    estimator = make_pipeline(SimpleImputer(strategy="median"), GradientBoostingClassifier(n_estimators=20))
    estimator.fit(x_train, cancer.y_train)
    model = forest_to_onnx(analyse(estimator).model)
    assert "nodes_missing_value_tracks_true" not in _ensemble(model)
    x_test = _with_holes_and_category(cancer.x_test, 1, 2)[:, :-1]
    scores = _run(model.SerializeToString(), x_test)[-1]
    expected = estimator.predict_proba(x_test)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert (scores.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_large_boosted_ensemble_split_where_ids_stay_two_bytes(digits: Split, monkeypatch: pytest.MonkeyPatch) -> None:
    estimator = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(digits.x_train, digits.y_train)
    forest = analyse(estimator).model
    small = forest_to_onnx(forest)
    copies = 2**16 // sum(len(t.left) for t in forest.trees) + 1  # about 2^15 split nodes, 2^15 leaves
    # each copy's leaves scaled apart, so that they are distinct leaves as in a real large ensemble
    trees = tuple(replace(t, value=t.value * (1.0 + c / 64)) for c in range(copies) for t in forest.trees)
    many = replace(forest, trees=trees)
    parts = forest_to_onnx(many)
    ensembles = [n for n in parts.graph.node if n.op_type == "TreeEnsemble"]
    assert len(ensembles) > 1 and len(list(n for n in small.graph.node if n.op_type == "TreeEnsemble")) == 1
    for node in ensembles:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert max(attrs["nodes_truenodeids"] + attrs["nodes_falsenodeids"]) < 2**14
    monkeypatch.setattr("model_compiler.onnx_forest._TWO_BYTE_IDS", 2**62)
    whole = forest_to_onnx(many)
    split_bytes, whole_bytes = (pack_attribute_ints(m.SerializeToString()) for m in (parts, whole))
    assert len(split_bytes) < len(whole_bytes)
    np.testing.assert_allclose(_run(split_bytes, digits.x_test)[-1], _run(whole_bytes, digits.x_test)[-1], atol=1e-6)
