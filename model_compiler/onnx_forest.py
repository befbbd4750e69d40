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

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from model_compiler.forest import Forest, Tree
from model_compiler.onnx_graph import OPSET, GraphBuilder, emit_preprocessing
from model_compiler.types import SCORES_NAME, VALUES_NAME

ML_OPSET = 5
IR_VERSION = 10  # the first IR version that knows ai.onnx.ml opset 5


class _Arrays:
    """The TreeEnsemble attributes, built tree by tree with numpy and joined at the end."""

    def __init__(self) -> None:
        self.n_nodes = 0
        self.n_leaves = 0
        self.roots: list[int] = []
        self.members: list[float] = []  # the sets of BRANCH_MEMBER nodes, in node order, each closed by NaN
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in _NODE_FIELDS + _LEAF_FIELDS}

    def add(self, tree: Tree, leaf_target: np.ndarray, leaf_weight: np.ndarray) -> None:
        """One tree whose leaf i (in node order) adds leaf_weight[i] to target leaf_target[i]."""
        is_leaf = tree.left < 0
        internal, leaves = np.flatnonzero(~is_leaf), np.flatnonzero(is_leaf)
        # new index of every old node: its place among the internal nodes, or among the leaves
        index = np.empty(len(is_leaf), dtype=np.int64)
        index[internal] = self.n_nodes + np.arange(len(internal))
        index[leaves] = self.n_leaves + np.arange(len(leaves))
        self.parts["leaf_targets"].append(leaf_target[leaves].astype(np.int64))
        self.parts["leaf_weights"].append(leaf_weight[leaves].astype(np.float64))
        if internal.size == 0:  # a lone leaf: route through one split that always goes "true"
            node = {
                "features": [0],
                "splits": [np.inf],
                "true_ids": index[:1],
                "true_leaf": [1],
                "false_ids": index[:1],
                "false_leaf": [1],
                "missing_true": [1],
                "modes": [BRANCH_LEQ],
            }
            self.roots.append(self.n_nodes)
        else:
            left, right = tree.left[internal], tree.right[internal]
            node = {
                "features": tree.feature[internal],
                "splits": tree.threshold[internal],
                "true_ids": index[left],
                "true_leaf": is_leaf[left].astype(np.int64),
                "false_ids": index[right],
                "false_leaf": is_leaf[right].astype(np.int64),
                "missing_true": tree.missing_left[internal].astype(np.int64),
                "modes": [BRANCH_MEMBER if int(i) in tree.left_sets else BRANCH_LEQ for i in internal],
            }
            for i in internal:
                if int(i) in tree.left_sets:
                    self.members.extend([*tree.left_sets[int(i)].tolist(), float("nan")])
            self.roots.append(int(index[0]))
        for k, v in node.items():
            self.parts[k].append(np.asarray(v))
        self.n_nodes += max(len(internal), 1)
        self.n_leaves += len(leaves)

    def ints(self, name: str) -> list[int]:
        return np.concatenate(self.parts[name]).astype(np.int64).tolist()

    def floats(self, name: str) -> np.ndarray:
        return np.concatenate(self.parts[name]).astype(np.float32)


_NODE_FIELDS = ["features", "splits", "true_ids", "true_leaf", "false_ids", "false_leaf", "missing_true", "modes"]
BRANCH_LEQ, BRANCH_MEMBER = 0, 6  # TreeEnsemble's nodes_modes
_LEAF_FIELDS = ["leaf_targets", "leaf_weights"]


def _single_target(forest: Forest) -> bool:
    return all(int((t.value[t.left < 0] != 0.0).sum(axis=1).max(initial=0)) <= 1 for t in forest.trees)


def _ensemble_attrs(arrays: _Arrays, n_targets: int, missing: bool) -> dict[str, Any]:
    # aggregate_function (SUM) and post_transform (NONE) are left at their defaults
    attrs: dict[str, Any] = {
        "n_targets": n_targets,
        "tree_roots": arrays.roots,
        "nodes_featureids": arrays.ints("features"),
        "nodes_splits": numpy_helper.from_array(arrays.floats("splits")),
        "nodes_modes": numpy_helper.from_array(np.concatenate(arrays.parts["modes"]).astype(np.uint8)),
        "nodes_truenodeids": arrays.ints("true_ids"),
        "nodes_trueleafs": arrays.ints("true_leaf"),
        "nodes_falsenodeids": arrays.ints("false_ids"),
        "nodes_falseleafs": arrays.ints("false_leaf"),
        "leaf_targetids": arrays.ints("leaf_targets"),
        "leaf_weights": numpy_helper.from_array(arrays.floats("leaf_weights")),
    }
    if arrays.members:
        attrs["membership_values"] = numpy_helper.from_array(np.array(arrays.members, dtype=np.float32))
    if missing:  # only where NaN can reach the trees: elsewhere the runtime refuses it
        attrs["nodes_missing_value_tracks_true"] = arrays.ints("missing_true")
    return attrs


def _emit_trees(g: GraphBuilder, forest: Forest, x: str) -> str:
    """The summed leaf values of all trees, (rows, n_targets)."""
    arrays = _Arrays()
    if _single_target(forest):
        for tree in forest.trees:
            nonzero_first = np.argmax(tree.value != 0.0, axis=1)  # the one non-zero target (0 if none)
            weight = tree.value[np.arange(len(nonzero_first)), nonzero_first]
            arrays.add(tree, tree.targets[nonzero_first], weight)
        attrs = _ensemble_attrs(arrays, forest.n_targets, forest.accepts_missing)
        return g.op("TreeEnsemble", [x], domain="ai.onnx.ml", **attrs)
    # Leaves with several non-zero values: each tree outputs the row of its leaf in a value table.
    rows = []
    for t, tree in enumerate(forest.trees):
        leaves = np.flatnonzero(tree.left < 0)
        table = np.zeros((len(leaves), forest.n_targets))
        table[:, tree.targets] = tree.value[leaves]
        first = arrays.n_leaves
        leaf_ids = np.zeros(len(tree.left))
        leaf_ids[leaves] = np.arange(first, first + len(leaves))
        arrays.add(tree, np.full(len(tree.left), t), leaf_ids)
        rows.append(table)
    attrs = _ensemble_attrs(arrays, len(forest.trees), forest.accepts_missing)
    ids = g.op("TreeEnsemble", [x], domain="ai.onnx.ml", **attrs)
    values = g.const(np.concatenate(rows).astype(np.float32), "v")
    picked = g.op("Gather", [values, g.op("Cast", [ids], to=onnx.TensorProto.INT64)], axis=0)  # (rows, trees, targets)
    return g.op("ReduceSum", [picked, g.const(np.array([1], np.int64), "a")], keepdims=0)


def forest_to_onnx(forest: Forest) -> onnx.ModelProto:
    g = GraphBuilder()
    x = emit_preprocessing(g, list(forest.segments), forest.n_features)
    y = _emit_trees(g, forest, x)
    if forest.average and len(forest.trees) > 1:
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
