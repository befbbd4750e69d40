"""Preprocessing folded into a tree ensemble's splits, so the artifact reads the raw input (lossless).

A tree only compares one column with a threshold, so a split on a preprocessed column is a split on the
raw column it came from:
    numeric   (fill, sub, add, and mul or div by a positive value): the chain f is non-decreasing on
              numbers, so {x : f(x) <= t} is {x <= t'} with t' the largest float32 for which the chain, in
              float32 as the graph computes it, stays <= t (a binary search over float32s, all the
              thresholds of a column at once); NaN goes where f(NaN) goes (the filled value), or where the
              split sent NaN when nothing fills it
    one-hot   (no arithmetic before it): "column for category c <= t" (0 <= t < 1) holds exactly when
              x != c: a BRANCH_NEQ split on the raw column (NaN != c holds too, so NaN goes left, as a NaN
              row's one-hot zeros do; where a fill makes NaN category c, the fold is not made). Not a
              one-member set with the sides swapped: onnxruntime (1.32) fuses chains of BRANCH_EQ nodes on
              one feature into a set whenever their true leaves have equal weights, targets ignored, which
              sent a one-hot chain of a random forest to the wrong class
    missing   indicator: "isnan(x) <= t" holds for every number: x <= +inf
Every input then reaches the leaf it reached through the preprocessing graph, and the graph (Gather,
IsNaN, Where, Sub, Div, Equal, Cast, Concat and their constants: 300-600 B in front of a small tree) goes.
Anything else (lookups, log, clipping, a negative scale, one-hot after arithmetic) keeps the graph.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from model_compiler.forest import Forest
from model_compiler.segments import (
    NumericSegment,
    OneHotSegment,
    Op,
    Segment,
    apply_op,
    apply_segments,
    has_lookup,
)

_MAX_FINITE = 0x7F7FFFFF  # the largest finite float32, as bits


def _ordered(x: np.ndarray) -> np.ndarray:
    """float32 -> int64 in the same order (-0.0 and 0.0 alike)."""
    bits = np.asarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.where(bits >= 0, bits, -(bits & 0x7FFFFFFF))


def _from_ordered(o: np.ndarray) -> np.ndarray:
    bits = np.where(o >= 0, o, (-o) | 0x80000000).astype(np.uint32)
    return bits.view(np.float32)


def _chain(ops: tuple[Op, ...], position: int) -> list[Op] | None:
    """The ops of one column of a numeric segment, or None when they are not non-decreasing on numbers."""
    out = []
    for op in ops:
        value = op.value[position : position + 1] if op.value.size else op.value
        if op.kind in ("fill", "sub", "add") or (op.kind in ("mul", "div") and bool(np.all(value > 0))):
            out.append(Op(op.kind, value))
        else:
            return None
    return out


def _apply(chain: list[Op], x: np.ndarray) -> np.ndarray:
    v = np.asarray(x, dtype=np.float32).reshape(-1, 1)
    for op in chain:
        v = apply_op(op, v)
    return v.reshape(-1)


def raw_thresholds(chain: list[Op], thresholds: np.ndarray) -> np.ndarray:
    """Per threshold t, the largest finite float32 x with chain(x) <= t (+inf if every number does, -inf
    if none does): then chain(x) <= t exactly when x <= t' for every finite float32 x."""
    t = np.asarray(thresholds, dtype=np.float32)
    lo = np.full(t.shape, -_MAX_FINITE, dtype=np.int64)  # invariant: chain(lo) <= t, hi's is not
    hi = np.full(t.shape, _MAX_FINITE, dtype=np.int64)
    none = ~(_apply(chain, _from_ordered(lo)) <= t)
    every = _apply(chain, _from_ordered(hi)) <= t
    while True:
        open_ = hi - lo > 1
        if not open_.any():
            break
        mid = (lo + hi) // 2
        ok = _apply(chain, _from_ordered(mid)) <= t
        lo = np.where(open_ & ok, mid, lo)
        hi = np.where(open_ & ~ok, mid, hi)
    out = _from_ordered(lo)
    out[every] = np.inf
    out[none] = -np.inf
    return out


def _columns(segments: list[Segment]) -> list[tuple[str, int, object]]:
    """Per preprocessed column: (kind, raw column, detail): ("numeric", j, chain), ("onehot", j, category),
    ("indicator", j, None), or ("keep", -1, None) where it cannot be folded."""
    out: list[tuple[str, int, object]] = []
    for s in segments:
        if isinstance(s, NumericSegment):
            for p, j in enumerate(s.columns.tolist()):
                chain = _chain(s.ops, p)
                out.append(("numeric", j, chain) if chain is not None else ("keep", -1, None))
        elif isinstance(s, OneHotSegment):
            plain = s.tolerance is None and all(op.kind == "fill" and op.lookup is None for op in s.ops)
            for c in s.categories.tolist():
                out.append(("onehot", s.column, c) if plain else ("keep", -1, None))
            if s.nan_category:
                out.append(("keep", -1, None))
        else:
            out.extend(("indicator", j, None) for j in s.columns.tolist())
    return out


def fold_preprocessing(forest: Forest) -> Forest | None:
    """The forest on the raw input (identity preprocessing), splitting exactly as before on every input,
    or None when its preprocessing cannot be folded (or there is none)."""
    segments = list(forest.segments)
    if forest.native_missing or has_lookup(segments):
        return None
    columns = _columns(segments)
    if all(kind == "numeric" and not detail for kind, _, detail in columns):
        return None  # nothing to fold: no graph in front of the trees
    used = {int(f) for tree in forest.trees for f in tree.feature[tree.left >= 0].tolist()}
    if any(columns[c][0] == "keep" for c in used) or any(tree.left_sets for tree in forest.trees):
        return None
    # what each preprocessed column holds for a NaN input: where a NaN sends a split
    at_nan = apply_segments(segments, np.full((1, forest.n_features), np.nan, np.float32))[0]
    # the numeric thresholds of each column, searched at once
    wanted: dict[int, list[float]] = {}
    for tree in forest.trees:
        for i in np.flatnonzero(tree.left >= 0).tolist():
            if columns[int(tree.feature[i])][0] == "numeric":
                wanted.setdefault(int(tree.feature[i]), []).append(float(tree.threshold[i]))
    raw: dict[tuple[int, float], float] = {}
    for c, ts in wanted.items():
        unique = np.unique(np.asarray(ts, dtype=np.float32))
        chain = columns[c][2]
        assert isinstance(chain, list)
        raw.update(zip(((c, float(t)) for t in unique), raw_thresholds(chain, unique).tolist(), strict=True))
    trees = []
    for tree in forest.trees:
        feature, threshold = tree.feature.copy(), tree.threshold.copy()
        left, right, missing = tree.left.copy(), tree.right.copy(), tree.missing_left.copy()
        unequal: set[int] = set()
        for i in np.flatnonzero(tree.left >= 0).tolist():
            c, t = int(tree.feature[i]), float(tree.threshold[i])
            kind, j, detail = columns[c]
            nan_left = bool(at_nan[c] <= t) if not np.isnan(at_nan[c]) else bool(tree.missing_left[i])
            feature[i] = j
            if kind == "numeric":
                threshold[i], missing[i] = raw[(c, t)], nan_left
            elif kind == "indicator":  # 0 (a number) <= t < 1 (NaN): numbers go left
                if not 0.0 <= t < 1.0:
                    return None
                threshold[i], missing[i] = np.inf, False
            else:  # one-hot: left (0 <= t < 1) exactly when x != category, NaN included
                if not 0.0 <= t < 1.0 or not nan_left:
                    return None
                assert isinstance(detail, float)
                threshold[i], missing[i] = detail, True
                unequal.add(i)
        trees.append(replace(tree, feature=feature, threshold=threshold, left=left, right=right,
                             missing_left=missing, left_unequal=frozenset(unequal)))  # fmt: skip
    identity = (NumericSegment(np.arange(forest.n_features, dtype=np.int64), ()),)
    # NaN now reaches the trees raw wherever the input accepts it: each split says where it goes
    return replace(forest, segments=identity, trees=tuple(trees), native_missing=forest.accepts_missing)

