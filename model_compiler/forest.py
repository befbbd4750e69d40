"""Tree ensembles as plain data, read straight from fitted scikit-learn trees (no skl2onnx).

Every supported ensemble becomes `Forest`: trees whose leaves add values to output targets, an
aggregation (sum or average), base values and a post-transform:
    "none"        regressors, and classifiers whose averaged leaves already are probabilities
    "softmax"     multiclass gradient boosting (one tree per class per stage)
    "logistic2"   binary gradient boosting: raw r -> [1 - sigmoid(r), sigmoid(r)]
    "complement2" binary forests with impure leaves: the leaves hold P(class 1) only -> [1 - p, p]
                  (one weight per leaf instead of two; pure leaves need one weight either way)

Thresholds are rounded *down* to float32: for any float32 input x, `x <= t` holds exactly when
`x <= float32_down(t)`, so the artifact splits exactly like scikit-learn on the inputs a device sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_compiler.errors import UnsupportedModelError
from model_compiler.segments import Segment, imputes


@dataclass(frozen=True)
class Tree:
    feature: np.ndarray  # int64 per node; -1 at leaves
    threshold: np.ndarray  # float32 per node (rounded down); go left when x <= threshold
    left: np.ndarray  # int64 per node; -1 at leaves
    right: np.ndarray
    missing_left: np.ndarray  # bool per node: NaN goes left
    value: np.ndarray  # float64 (n_nodes, len(targets)): what each leaf adds
    targets: np.ndarray  # int64: output targets this tree contributes to
    # categorical splits (HistGradientBoosting): node -> the category codes that go left; any other code
    # goes right, NaN (missing or unknown) follows missing_left
    left_sets: dict[int, np.ndarray] = field(default_factory=dict)
    # nodes that go left when x != threshold (NaN included): a one-hot split folded onto its raw column
    # (tree_fold.py)
    left_unequal: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Forest:
    family: str
    estimator: str
    n_features: int
    segments: tuple[Segment, ...]
    trees: tuple[Tree, ...]
    n_targets: int
    average: bool
    base: np.ndarray  # float64 (n_targets,)
    post: str  # "none" | "softmax" | "logistic2" | "complement2"
    classifier: bool
    n_outputs: int  # classes (classifiers) or targets (regressors)
    native_missing: bool  # the trees route NaN themselves (HistGradientBoosting)

    @property
    def accepts_missing(self) -> bool:
        return self.native_missing or imputes(list(self.segments))


def round_down_f32(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    t32 = t.astype(np.float32)
    above = t32.astype(np.float64) > t
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def _sk_tree(tree: Any, value: np.ndarray, targets: np.ndarray) -> Tree:
    t = tree.tree_
    missing = getattr(t, "missing_go_to_left", None)
    return Tree(
        feature=np.where(t.children_left == -1, -1, t.feature).astype(np.int64),
        threshold=round_down_f32(t.threshold),
        left=t.children_left.astype(np.int64),
        right=t.children_right.astype(np.int64),
        missing_left=np.zeros(t.node_count, bool) if missing is None else np.asarray(missing, bool),
        value=value,
        targets=targets,
    )


def _class_fractions(tree: Any) -> np.ndarray:
    v = tree.tree_.value[:, 0, :].astype(np.float64)
    total = v.sum(axis=1, keepdims=True)
    return np.divide(v, total, out=np.zeros_like(v), where=total > 0)


def _bagged(
    est: Any, trees: list[Any], classifier: bool, n_features: int, segments: tuple[Segment, ...], family: str
) -> Forest:
    if classifier:
        if getattr(est, "n_outputs_", 1) != 1:
            raise UnsupportedModelError(f"{type(est).__name__} with several outputs")
        k = len(est.classes_)
        fractions = [_class_fractions(t) for t in trees]
        pure = all(
            ((f[t.tree_.children_left == -1] != 0).sum(axis=1) <= 1).all()
            for f, t in zip(fractions, trees, strict=True)
        )
        if k == 2 and not pure:  # keep P(class 1) only: one weight per leaf instead of two
            built = [_sk_tree(t, f[:, 1:], np.array([0])) for t, f in zip(trees, fractions, strict=True)]
            return Forest(
                family,
                type(est).__name__,
                n_features,
                segments,
                tuple(built),
                1,
                True,
                np.zeros(1),
                "complement2",
                True,
                2,
                False,
            )
        built = [_sk_tree(t, f, np.arange(k)) for t, f in zip(trees, fractions, strict=True)]
        return Forest(
            family, type(est).__name__, n_features, segments, tuple(built), k, True, np.zeros(k), "none", True, k, False
        )
    n_out = int(getattr(est, "n_outputs_", 1))
    built = [_sk_tree(t, t.tree_.value[:, :, 0].astype(np.float64), np.arange(n_out)) for t in trees]
    return Forest(
        family,
        type(est).__name__,
        n_features,
        segments,
        tuple(built),
        n_out,
        True,
        np.zeros(n_out),
        "none",
        False,
        n_out,
        False,
    )


def _gradient_boosting(est: Any, classifier: bool, n_features: int, segments: tuple[Segment, ...]) -> Forest:
    from sklearn.dummy import DummyClassifier, DummyRegressor

    if not (isinstance(est.init_, DummyClassifier | DummyRegressor) or est.init_ == "zero"):
        raise UnsupportedModelError(f"{type(est).__name__} with init={type(est.init_).__name__}")
    base = np.asarray(est._raw_predict_init(np.zeros((1, est.n_features_in_))), dtype=np.float64)[0]
    k = est.estimators_.shape[1]
    factor = est.learning_rate
    post = "none"
    if classifier:
        post = "softmax" if k > 1 else "logistic2"
        if est.loss == "exponential":  # predict_proba = sigmoid(2 * raw)
            factor, base = factor * 2.0, base * 2.0
    trees = [
        _sk_tree(est.estimators_[i, j], est.estimators_[i, j].tree_.value[:, 0, :1] * factor, np.array([j]))
        for i in range(est.estimators_.shape[0])
        for j in range(k)
    ]
    n_outputs = len(est.classes_) if classifier else 1
    return Forest(
        "trees",
        type(est).__name__,
        n_features,
        segments,
        tuple(trees),
        k,
        False,
        base,
        post,
        classifier,
        n_outputs,
        False,
    )


def _hist_gradient_boosting(est: Any, classifier: bool, n_features: int, segments: tuple[Segment, ...]) -> Forest:
    name = type(est).__name__
    # categorical features: est._preprocessor (an OrdinalEncoder, traced into `segments` by families.py)
    # turns categories into codes 0..k-1 and unknown ones into NaN; the trees split on sets of codes
    if type(est._loss.link).__name__ not in ("IdentityLink", "LogitLink", "MultinomialLogit"):
        raise UnsupportedModelError(f"{name}(loss={est.loss!r})")
    base = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1)
    k = base.shape[0]
    trees = []
    for stage in est._predictors:
        for j, predictor in enumerate(stage):
            nodes = predictor.nodes
            leaf = nodes["is_leaf"].astype(bool)
            left_sets = {
                int(i): _bitset_members(predictor.raw_left_cat_bitsets[nodes["bitset_idx"][i]])
                for i in np.flatnonzero(nodes["is_categorical"].astype(bool) & ~leaf)
            }
            trees.append(
                Tree(
                    feature=np.where(leaf, -1, nodes["feature_idx"].astype(np.int64)),
                    threshold=round_down_f32(nodes["num_threshold"]),
                    left=np.where(leaf, -1, nodes["left"].astype(np.int64)),
                    right=np.where(leaf, -1, nodes["right"].astype(np.int64)),
                    missing_left=nodes["missing_go_to_left"].astype(bool),
                    value=nodes["value"].astype(np.float64).reshape(-1, 1),
                    targets=np.array([j]),
                    left_sets=left_sets,
                )
            )
    post = "none"
    if classifier:
        post = "softmax" if k > 1 else "logistic2"
    n_outputs = len(est.classes_) if classifier else 1
    return Forest("trees", name, n_features, segments, tuple(trees), k, False, base, post, classifier, n_outputs, True)


def _bitset_members(words: np.ndarray) -> np.ndarray:
    """The codes whose bit is set in a scikit-learn category bitset (uint32 words, bit c % 32 of word c // 32)."""
    bits = np.unpackbits(np.asarray(words, dtype="<u4").view(np.uint8), bitorder="little")
    return np.flatnonzero(bits).astype(np.float32)


def forest_from(est: Any, n_features: int, segments: tuple[Segment, ...]) -> Forest:
    """The Forest of a fitted tree-ensemble estimator; UnsupportedModelError for anything else."""
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
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    if isinstance(est, DecisionTreeClassifier | DecisionTreeRegressor):
        return _bagged(est, [est], isinstance(est, DecisionTreeClassifier), n_features, segments, "trees")
    if isinstance(est, RandomForestClassifier | ExtraTreesClassifier):
        return _bagged(est, list(est.estimators_), True, n_features, segments, "trees")
    if isinstance(est, RandomForestRegressor | ExtraTreesRegressor):
        return _bagged(est, list(est.estimators_), False, n_features, segments, "trees")
    if isinstance(est, GradientBoostingClassifier | GradientBoostingRegressor):
        return _gradient_boosting(est, isinstance(est, GradientBoostingClassifier), n_features, segments)
    if isinstance(est, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        return _hist_gradient_boosting(est, isinstance(est, HistGradientBoostingClassifier), n_features, segments)
    raise UnsupportedModelError(type(est).__name__)
