"""Tree ensembles to ONNX with the compact `TreeEnsemble` operator (ai.onnx.ml opset 5, onnxruntime >= 1.20).

Why not skl2onnx's TreeEnsembleClassifier/Regressor: those store every node's mode as a string, every
leaf's id twice, hit rates, and a weight for every class at every leaf, zeros included. TreeEnsemble
stores split modes as one byte, leaves apart from nodes, and one weight per leaf; the artifact shrinks
losslessly to a third of skl2onnx's size or less. Its one limit: a leaf feeds one target. When some
leaves hold several non-zero class fractions (a depth-limited multiclass forest), each tree instead
outputs the row of its leaf in a (leaves x classes) value table, which Gather + ReduceSum then add up.

Aggregation is SUM, with averaging done by one Mul after it, so sums of exact leaf fractions keep
scikit-learn's ties (and so its argmax) exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from model_compiler.forest import Forest, Tree
from model_compiler.onnx_graph import OPSET, GraphBuilder, emit_preprocessing
from model_compiler.types import SCORES_NAME, VALUES_NAME

ML_OPSET = 5
IR_VERSION = 10  # the first IR version that knows ai.onnx.ml opset 5
_SUM = 1


@dataclass
class _Arrays:
    """The TreeEnsemble attributes, filled tree by tree."""

    roots: list[int] = field(default_factory=list)
    features: list[int] = field(default_factory=list)
    splits: list[float] = field(default_factory=list)
    true_ids: list[int] = field(default_factory=list)
    true_leaf: list[int] = field(default_factory=list)
    false_ids: list[int] = field(default_factory=list)
    false_leaf: list[int] = field(default_factory=list)
    missing_true: list[int] = field(default_factory=list)
    leaf_targets: list[int] = field(default_factory=list)
    leaf_weights: list[float] = field(default_factory=list)

    def add(self, tree: Tree, leaf_target: np.ndarray, leaf_weight: np.ndarray) -> None:
        """One tree whose leaf i (in node order) adds leaf_weight[i] to target leaf_target[i]."""
        internal = np.flatnonzero(tree.left >= 0)
        leaves = np.flatnonzero(tree.left < 0)
        node_index = {int(n): len(self.features) + i for i, n in enumerate(internal)}
        leaf_index = {int(n): len(self.leaf_targets) + i for i, n in enumerate(leaves)}
        self.leaf_targets.extend(int(t) for t in leaf_target[leaves])
        self.leaf_weights.extend(float(w) for w in leaf_weight[leaves])
        if internal.size == 0:  # a lone leaf: route through one split that always goes "true"
            self.roots.append(len(self.features))
            self._node(0, np.inf, leaf_index[0], 1, leaf_index[0], 1, 1)
            return
        self.roots.append(node_index[0])
        for n in internal:
            left, right = int(tree.left[n]), int(tree.right[n])
            self._node(
                int(tree.feature[n]),
                float(tree.threshold[n]),
                node_index.get(left, leaf_index.get(left, -1)),
                int(left in leaf_index),
                node_index.get(right, leaf_index.get(right, -1)),
                int(right in leaf_index),
                int(tree.missing_left[n]),
            )

    def _node(self, feature: int, split: float, t: int, t_leaf: int, f: int, f_leaf: int, missing: int) -> None:
        self.features.append(feature)
        self.splits.append(split)
        self.true_ids.append(t)
        self.true_leaf.append(t_leaf)
        self.false_ids.append(f)
        self.false_leaf.append(f_leaf)
        self.missing_true.append(missing)


def _single_target(forest: Forest) -> bool:
    return all(int((t.value[t.left < 0] != 0.0).sum(axis=1).max(initial=0)) <= 1 for t in forest.trees)


def _ensemble_attrs(arrays: _Arrays, n_targets: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "n_targets": n_targets,
        "aggregate_function": _SUM,
        "post_transform": 0,
        "tree_roots": arrays.roots,
        "nodes_featureids": arrays.features,
        "nodes_splits": numpy_helper.from_array(np.array(arrays.splits, dtype=np.float32)),
        "nodes_modes": numpy_helper.from_array(np.zeros(len(arrays.features), dtype=np.uint8)),  # BRANCH_LEQ
        "nodes_truenodeids": arrays.true_ids,
        "nodes_trueleafs": arrays.true_leaf,
        "nodes_falsenodeids": arrays.false_ids,
        "nodes_falseleafs": arrays.false_leaf,
        "leaf_targetids": arrays.leaf_targets,
        "leaf_weights": numpy_helper.from_array(np.array(arrays.leaf_weights, dtype=np.float32)),
    }
    if any(arrays.missing_true):
        attrs["nodes_missing_value_tracks_true"] = arrays.missing_true
    return attrs


def _emit_trees(g: GraphBuilder, forest: Forest, x: str) -> str:
    """The summed leaf values of all trees, (rows, n_targets)."""
    arrays = _Arrays()
    if _single_target(forest):
        for tree in forest.trees:
            nonzero_first = np.argmax(tree.value != 0.0, axis=1)  # the one non-zero target (0 if none)
            weight = tree.value[np.arange(len(nonzero_first)), nonzero_first]
            arrays.add(tree, tree.targets[nonzero_first], weight)
        return g.op("TreeEnsemble", [x], domain="ai.onnx.ml", **_ensemble_attrs(arrays, forest.n_targets))
    # Leaves with several non-zero values: each tree outputs the row of its leaf in a value table.
    rows = []
    for t, tree in enumerate(forest.trees):
        leaves = np.flatnonzero(tree.left < 0)
        table = np.zeros((len(leaves), forest.n_targets))
        table[:, tree.targets] = tree.value[leaves]
        first = len(arrays.leaf_targets)
        leaf_ids = np.zeros(len(tree.left))
        leaf_ids[leaves] = np.arange(first, first + len(leaves))
        arrays.add(tree, np.full(len(tree.left), t), leaf_ids)
        rows.append(table)
    ids = g.op("TreeEnsemble", [x], domain="ai.onnx.ml", **_ensemble_attrs(arrays, len(forest.trees)))
    values = g.const(np.concatenate(rows).astype(np.float32), "v")
    picked = g.op("Gather", [values, g.op("Cast", [ids], to=onnx.TensorProto.INT64)], axis=0)  # (rows, trees, targets)
    return g.op("ReduceSum", [picked, g.const(np.array([1], np.int64), "a")], keepdims=0)


def forest_to_onnx(forest: Forest) -> onnx.ModelProto:
    g = GraphBuilder()
    x = emit_preprocessing(g, list(forest.segments), forest.n_features)
    y = _emit_trees(g, forest, x)
    if forest.average:
        y = g.op("Mul", [y, g.const(np.float32(1.0 / len(forest.trees)), "m")])
    if forest.base.any():
        y = g.op("Add", [y, g.const(forest.base.astype(np.float32), "b")])
    if forest.post == "softmax":
        y = g.op("Softmax", [y], axis=1)
    elif forest.post == "logistic2":  # raw r -> softmax([-r/2, r/2]) == [1 - sigmoid(r), sigmoid(r)]
        y = g.op("Softmax", [g.op("Mul", [y, g.const(np.array([-0.5, 0.5], np.float32), "m")])], axis=1)
    elif forest.post == "complement2":  # p -> [1 - p, p]
        y = g.op(
            "Add",
            [
                g.op("Mul", [y, g.const(np.array([-1.0, 1.0], np.float32), "m")]),
                g.const(np.array([1.0, 0.0], np.float32), "a"),
            ],
        )
    name = SCORES_NAME if forest.classifier else VALUES_NAME
    g.rename_output(y, name)
    return g.model(
        forest.n_features, [(name, forest.n_outputs)], opsets={"": OPSET, "ai.onnx.ml": ML_OPSET}, ir_version=IR_VERSION
    )
