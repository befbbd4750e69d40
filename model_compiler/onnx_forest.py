"""Tree ensembles to ONNX with the compact `TreeEnsemble` operator (ai.onnx.ml opset 5, onnxruntime >= 1.20).

Why not skl2onnx's TreeEnsembleClassifier/Regressor: those store every node's mode as a string, every
leaf's id twice, hit rates, and a weight for every class at every leaf, zeros included. TreeEnsemble
stores split modes as one byte, leaves apart from nodes, one weight per leaf, and each distinct leaf once
for the whole ensemble (see _Arrays); with its integer lists written packed (onnx_pack.py) the artifact
shrinks losslessly to about a quarter of skl2onnx's size or less (ensembles; a lone small tree
keeps the graph's fixed bytes). FP16 leaf weights are not an option: the operator requires leaf_weights
to have the input's type. Its one limit: a leaf feeds one target. When some
leaves hold several non-zero class fractions (a depth-limited multiclass forest), each tree instead
outputs the row of its leaf in a (leaves x classes) value table, which Gather + ReduceSum then add up.

NaN costs no byte a node: each split's mode sends it (NaN fails every comparison and set, so a split
whose NaN goes left becomes GT with its sides swapped; see _Arrays). HistGradientBoosting's categorical
columns code NaN and unknown values as one more category (_code_missing).

Aggregation is SUM, with averaging done by one Mul after it, so sums of exact leaf fractions keep
scikit-learn's ties (and so its argmax) exact.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from model_compiler.forest import Forest, Tree
from model_compiler.onnx_graph import OPSET, GraphBuilder, emit_preprocessing
from model_compiler.segments import NumericSegment, Segment, code_domains, nan_reaches_output, segment_width
from model_compiler.tree_fold import fold_preprocessing
from model_compiler.types import SCORES_NAME, VALUES_NAME

ML_OPSET = 5
IR_VERSION = 10  # the first IR version that knows ai.onnx.ml opset 5


class _Arrays:
    """The TreeEnsemble attributes, shared across the whole ensemble.

    TreeEnsemble refers to leaves by index, and several nodes may name the same leaf, so a leaf is stored
    once per distinct (target, weight), across all trees; a split whose two sides reach the same leaf is
    dropped (its subtree gives that leaf whatever the input). Lossless: every input still reaches leaves
    of the same weights. Internal nodes cannot be shared: onnxruntime (1.20+) refuses a node reached
    twice ("cycle or shared internal node")."""

    def __init__(
        self, domains: dict[int, np.ndarray] | None = None, nan: bool = False, coded: dict[int, float] | None = None
    ) -> None:
        self.domains = domains or {}  # feature -> the codes it can hold besides NaN (see _category_split)
        self.nan = nan  # whether NaN can reach the trees: splits then choose their mode by where NaN goes
        self.coded = coded or {}  # feature -> the code its lookup gives NaN and unknown values (_code_missing)
        self._domain_lists = {f: sorted(float(v) for v in d) for f, d in self.domains.items()}
        self._domain_sets = {f: set(d) for f, d in self._domain_lists.items()}
        self.roots: list[int] = []
        self.members: list[float] = []  # the sets of BRANCH_MEMBER nodes, in node order, each closed by NaN
        self.nodes: list[tuple[Any, ...]] = []  # (feature, split, mode, true, false, missing, members)
        self.leaves: list[tuple[int, float]] = []
        self._leaf_ids: dict[tuple[int, float], int] = {}

    @property
    def n_leaves(self) -> int:
        return len(self.leaves)

    def leaf(self, target: int, weight: float) -> int:
        key = (target, weight)
        if key not in self._leaf_ids:
            self._leaf_ids[key] = len(self.leaves)
            self.leaves.append(key)
        return self._leaf_ids[key]

    def _node(self, key: tuple[Any, ...]) -> int:
        self.nodes.append(key)
        return len(self.nodes) - 1

    def add(self, tree: Tree, leaf_target: np.ndarray, leaf_weight: np.ndarray) -> None:
        """One tree whose leaf i (in node order) adds leaf_weight[i] to target leaf_target[i]."""
        feature, threshold, left, right = tree.feature.tolist(), tree.threshold.tolist(), tree.left, tree.right
        missing, targets, weights = tree.missing_left.tolist(), leaf_target.tolist(), leaf_weight.tolist()
        # a reference is (is_leaf, index); scikit-learn numbers children after their parent, so walking the
        # nodes backwards resolves both children of a node before the node
        split = np.flatnonzero(left >= 0)
        if not ((left[split] > split).all() and (right[split] > split).all()):
            raise ValueError("tree nodes must be numbered after their parent")
        lefts, rights, sets, unequal = left.tolist(), right.tolist(), tree.left_sets, tree.left_unequal
        ref: list[tuple[int, int]] = [(0, 0)] * len(lefts)
        leaf_ids, leaves = self._leaf_ids, self.leaves
        for i in range(len(lefts) - 1, -1, -1):
            a = lefts[i]
            if a < 0:
                key = (targets[i], weights[i])
                found = leaf_ids.get(key)
                if found is None:
                    found = leaf_ids[key] = len(leaves)
                    leaves.append(key)
                ref[i] = (1, found)
                continue
            true, false = ref[a], ref[rights[i]]
            if true == false:
                ref[i] = true
            elif i in unequal:  # NaN != t holds: NaN goes left, as the fold made sure it should
                ref[i] = (0, self._node((feature[i], threshold[i], BRANCH_NEQ, true, false, False, None)))
            elif i in sets and not len(sets[i]) and feature[i] not in self.coded:
                # a split that sends only missing values left (no category): every number is >= -inf
                if not (self.nan and missing[i]):
                    ref[i] = false
                else:
                    ref[i] = (0, self._node((feature[i], float("-inf"), BRANCH_GTE, false, true, False, None)))
            elif i in sets:
                ref[i] = (0, self._node(self._category_split(feature[i], sets[i], true, false, missing[i])))
            elif self.nan and missing[i]:
                ref[i] = (0, self._node((feature[i], threshold[i], BRANCH_GT, false, true, False, None)))
            else:
                ref[i] = (0, self._node((feature[i], threshold[i], BRANCH_LEQ, true, false, False, None)))
        is_leaf, index = ref[0]
        if is_leaf:  # a lone leaf: route through one split that always goes "true"
            index = self._node((0, float("inf"), BRANCH_LEQ, (1, index), (1, index), False, None))
        self.roots.append(index)

    def _category_split(
        self, feature: int, members: np.ndarray, true: Any, false: Any, missing: bool
    ) -> tuple[Any, ...]:
        """The cheapest node sending the codes in `members` to `true`, the feature's other codes to `false`,
        NaN to `true` if `missing`. A set is 4 bytes a member plus a separator; where the feature's codes
        are known (an OrdinalEncoder feeds it), the set or its complement (branches swapped) is often one
        comparison: every code up to c (LEQ c), from c on (GTE c), or c alone (EQ c). NaN fails every
        comparison and every set, so where NaN can reach, the form whose false side is NaN's is chosen."""
        # plain sorted lists, not numpy: this runs once per categorical split (thousands in a large model)
        domain = self._domain_lists.get(feature)
        codes = members.tolist()
        nan = self.nan
        if feature in self.coded:  # NaN and unknown values arrive as one more code, free to join either side
            codes = [*codes, self.coded[feature]] if missing else codes  # the largest code: still sorted
            nan = missing = False
        forms = [(codes, true, false, missing)]
        if domain is not None and set(codes) <= self._domain_sets[feature]:
            taken = set(codes)
            rest = [d for d in domain if d not in taken]
            if rest:
                forms.append((rest, false, true, not missing))
            elif nan and missing:  # every code and NaN go to `true`
                forms = [([], false, true, False)]
        if nan and any(not nan_yes for *_, nan_yes in forms):
            forms = [f for f in forms if not f[3]]
        best: tuple[Any, ...] | None = None
        for chosen, yes, no, nan_yes in forms:
            flag = bool(nan and nan_yes)  # only where no form sends NaN the right way by itself
            if not chosen:
                return (feature, float("-inf"), BRANCH_LEQ, yes, no, flag, None)  # no number is <= -inf
            if domain is not None and chosen == domain[: len(chosen)]:
                return (feature, chosen[-1], BRANCH_LEQ, yes, no, flag, None)
            if domain is not None and chosen == domain[len(domain) - len(chosen) :]:
                return (feature, chosen[0], BRANCH_GTE, yes, no, flag, None)
            if len(chosen) == 1:
                return (feature, chosen[0], BRANCH_EQ, yes, no, flag, None)
            if best is None or len(chosen) < len(best[6]):
                best = (feature, 0.0, BRANCH_MEMBER, yes, no, flag, tuple(chosen))
        assert best is not None
        return best

    def node_field(self, k: int) -> list[Any]:
        return [n[k] for n in self.nodes]


_NODE_FIELDS = ["features", "splits", "true_ids", "true_leaf", "false_ids", "false_leaf", "missing_true", "modes"]
BRANCH_LEQ, BRANCH_GTE, BRANCH_GT, BRANCH_EQ, BRANCH_NEQ, BRANCH_MEMBER = 0, 2, 3, 4, 5, 6  # TreeEnsemble's nodes_modes
_LEAF_FIELDS = ["leaf_targets", "leaf_weights"]
_TWO_BYTE_IDS = 1 << 14  # the first id whose varint takes 3 bytes


def _single_target(forest: Forest) -> bool:
    return all(int((t.value[t.left < 0] != 0.0).sum(axis=1).max(initial=0)) <= 1 for t in forest.trees)


def _ensemble_attrs(arrays: _Arrays, n_targets: int) -> dict[str, Any]:
    # aggregate_function (SUM) and post_transform (NONE) are left at their defaults
    true, false = arrays.node_field(3), arrays.node_field(4)
    for n in arrays.nodes:
        if n[6] is not None:
            arrays.members.extend([*n[6], float("nan")])
    attrs: dict[str, Any] = {
        "n_targets": n_targets,
        "tree_roots": arrays.roots,
        "nodes_featureids": arrays.node_field(0),
        "nodes_splits": numpy_helper.from_array(np.array(arrays.node_field(1), dtype=np.float32)),
        "nodes_modes": numpy_helper.from_array(np.array(arrays.node_field(2), dtype=np.uint8)),
        "nodes_truenodeids": [r[1] for r in true],
        "nodes_trueleafs": [r[0] for r in true],
        "nodes_falsenodeids": [r[1] for r in false],
        "nodes_falseleafs": [r[0] for r in false],
        "leaf_targetids": [t for t, _ in arrays.leaves],
        "leaf_weights": numpy_helper.from_array(np.array([w for _, w in arrays.leaves], dtype=np.float32)),
    }
    if arrays.members:
        attrs["membership_values"] = numpy_helper.from_array(np.array(arrays.members, dtype=np.float32))
    flags = arrays.node_field(5)
    if any(flags):  # rare (see _Arrays): splits send NaN the right way by their mode
        attrs["nodes_missing_value_tracks_true"] = [int(m) for m in flags]
    return attrs


def _emit_trees(g: GraphBuilder, forest: Forest, x: str, segments: list[Segment], coded: dict[int, float]) -> str:
    """The summed leaf values of all trees, (rows, n_targets)."""
    nan = forest.native_missing or nan_reaches_output(list(forest.segments), forest.accepts_missing)
    domains = code_domains(segments)
    arrays = _Arrays(domains, nan, coded)
    if _single_target(forest):
        # Node and leaf ids are varints: 3 bytes from 2^14 on. A large boosted ensemble is split into parts
        # whose ids all stay under 2^14, each an operator of its own, summed (about 1 byte saved per id past
        # 2^14 for ~300 bytes of attribute names per part). Bagged forests stay whole: their averaged
        # fractions keep scikit-learn's ties only when summed in one order.
        parts = [arrays]
        for tree in forest.trees:
            last = parts[-1]
            grows = max(len(last.nodes), last.n_leaves) + len(tree.left)
            if not forest.average and last.roots and grows >= _TWO_BYTE_IDS:
                parts.append(_Arrays(domains, nan, coded))
            nonzero_first = np.argmax(tree.value != 0.0, axis=1)  # the one non-zero target (0 if none)
            weight = tree.value[np.arange(len(nonzero_first)), nonzero_first]
            parts[-1].add(tree, tree.targets[nonzero_first], weight)
        sums = [g.op("TreeEnsemble", [x], domain="ai.onnx.ml", **_ensemble_attrs(a, forest.n_targets)) for a in parts]
        total = sums[0]
        for part in sums[1:]:
            total = g.op("Add", [total, part])
        return total
    # Leaves with several non-zero values: each tree outputs the row of its leaf in a value table, which
    # holds each distinct row once.
    rows: dict[bytes, int] = {}
    table: list[np.ndarray] = []
    for t, tree in enumerate(forest.trees):
        full = np.zeros((len(tree.left), forest.n_targets), dtype=np.float32)
        full[:, tree.targets] = tree.value
        row_ids = np.zeros(len(tree.left))
        for i in np.flatnonzero(tree.left < 0):
            key = full[i].tobytes()
            if key not in rows:
                rows[key] = len(table)
                table.append(full[i])
            row_ids[i] = rows[key]
        arrays.add(tree, np.full(len(tree.left), t), row_ids)
    attrs = _ensemble_attrs(arrays, len(forest.trees))
    ids = g.op("TreeEnsemble", [x], domain="ai.onnx.ml", **attrs)
    values = g.const(np.stack(table), "v")
    picked = g.op("Gather", [values, g.op("Cast", [ids], to=onnx.TensorProto.INT64)], axis=0)  # (rows, trees, targets)
    return g.op("ReduceSum", [picked, g.const(np.array([1], np.int64), "a")], keepdims=0)


def _code_missing(forest: Forest) -> tuple[list[Segment], dict[int, float]]:
    """The forest's preprocessing with NaN and unknown values coded as one more category, k, where an
    OrdinalEncoder lookup makes them NaN and only categorical splits read the column (HistGradientBoosting's
    categorical features); and feature -> k. A split then sends k where its missing flag sent NaN, and can
    test whichever of its set or the complement is cheaper, which NaN (in neither) would not allow."""
    numeric: set[int] = set()
    categorical: set[int] = set()
    for tree in forest.trees:
        for i in np.flatnonzero(tree.left >= 0).tolist():
            (categorical if i in tree.left_sets else numeric).add(int(tree.feature[i]))
    segments: list[Segment] = []
    coded: dict[int, float] = {}
    start = 0
    for s in forest.segments:
        width = segment_width(s)
        lookup = s.ops[-1].lookup if isinstance(s, NumericSegment) and len(s.columns) == 1 and s.ops else None
        if lookup is not None and start in categorical - numeric and np.isnan([lookup.missing, lookup.unknown]).all():
            assert isinstance(s, NumericSegment)
            k = float(lookup.codes.max(initial=-1.0)) + 1.0
            coded_lookup = replace(lookup, missing=k, unknown=k)
            s = replace(s, ops=(*s.ops[:-1], replace(s.ops[-1], lookup=coded_lookup)))
            coded[start] = k
        segments.append(s)
        start += width
    return segments, coded


def forest_to_onnx(forest: Forest, *, fold: bool = True) -> onnx.ModelProto:
    """The forest as ONNX; with `fold`, its preprocessing folded into the splits where it can be (tree_fold.py)."""
    g = GraphBuilder()
    forest = (fold_preprocessing(forest) if fold else None) or forest
    segments, coded = _code_missing(forest)
    x = emit_preprocessing(g, segments, forest.n_features)
    y = _emit_trees(g, forest, x, segments, coded)
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
