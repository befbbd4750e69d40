"""Traced preprocessing as plain data: `Segment`s of output columns, and the numpy reference they mean.

Output columns: numeric (a chain of `Op`s on one source column; an OrdinalEncoder is a `lookup` op in
that chain), one-hot (1.0 where the source column, after its chain, equals a category; compared within
a small tolerance when the chain did arithmetic, since a device computes it in float32 and scikit-learn
in float64), or a missing-value indicator. Consecutive numeric columns with the same chain of op kinds
form a `NumericSegment`; the one-hot columns of one source column an `OneHotSegment`. `apply_segments`
is the numpy reference the emitted graphs (onnx_graph, tflite_dense) are tested against; preprocess.py
traces fitted scikit-learn steps into segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

OpKind = Literal["fill", "sub", "div", "mul", "add", "max", "min", "log", "log1p", "exp", "sqrt", "abs", "lookup"]
UNARY: tuple[str, ...] = ("log", "log1p", "exp", "sqrt", "abs")


@dataclass(frozen=True, eq=False)  # compared by identity: one encoder's table
class Lookup:
    """OrdinalEncoder on one column: keys[i] -> codes[i]; NaN -> missing; any other value -> unknown."""

    keys: np.ndarray  # float32, the non-NaN categories
    codes: np.ndarray  # float32, one per key
    missing: float  # output for NaN (NaN when NaN passes through)
    unknown: float  # output for a value outside keys (NaN: the model sees it as missing)


@dataclass(frozen=True)
class Op:
    kind: OpKind  # fill: NaN -> value; sub/div/mul/add/max/min: elementwise with value; unary: no value
    value: np.ndarray  # float32, one per column of the segment (empty for unary ops and lookups)
    lookup: Lookup | None = None


@dataclass(frozen=True)
class NumericSegment:
    columns: np.ndarray  # int64 source columns
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class OneHotSegment:
    column: int
    ops: tuple[Op, ...]  # applied to the one source column before comparing
    categories: np.ndarray  # float32 non-NaN categories, one output column each
    nan_category: bool  # one more output column, last: 1.0 where the value is NaN
    tolerance: np.ndarray | None  # float32 per category; None: exact comparison

    @property
    def width(self) -> int:
        return len(self.categories) + int(self.nan_category)


@dataclass(frozen=True)
class IndicatorSegment:
    columns: np.ndarray  # int64 source columns: 1.0 where NaN, else 0.0


Segment = NumericSegment | OneHotSegment | IndicatorSegment


def is_identity(segments: list[Segment], n_features: int) -> bool:
    if len(segments) != 1 or not isinstance(segments[0], NumericSegment):
        return False
    s = segments[0]
    return not s.ops and np.array_equal(s.columns, np.arange(n_features))


def imputes(segments: list[Segment]) -> bool:
    """Whether NaN in an input means "missing" to the artifact (something replaces or encodes it)."""
    for s in segments:
        if isinstance(s, IndicatorSegment) or (isinstance(s, OneHotSegment) and s.nan_category):
            return True
        if isinstance(s, NumericSegment | OneHotSegment):
            for op in s.ops:
                if op.kind == "fill" or (op.lookup is not None and not np.isnan(op.lookup.missing)):
                    return True
    return False


def nan_reaches_output(segments: list[Segment], accepts_missing: bool) -> bool:
    """Whether an output column may hold NaN on an accepted input: a raw NaN no op replaces (where the input
    accepts NaN at all), a lookup's NaN for unknown values, or an op that makes NaN of numbers (log, sqrt of
    a negative; 0 * inf). One-hot and indicator columns are always 0/1."""
    for s in segments:
        if not isinstance(s, NumericSegment):
            continue
        nan = accepts_missing
        for op in s.ops:
            if op.lookup is not None:
                nan = bool(np.isnan(op.lookup.unknown)) or (nan and bool(np.isnan(op.lookup.missing)))
            elif op.kind == "fill":
                nan = False
            elif op.kind in ("log", "log1p", "sqrt") or (op.kind in ("mul", "div") and not np.all(op.value)):
                nan = True
        if nan:
            return True
    return False


def code_domains(segments: list[Segment]) -> dict[int, np.ndarray]:
    """Output column -> the numbers it can hold besides NaN, for columns an OrdinalEncoder lookup ends
    (its codes, and its outputs for unknown and missing values where those are numbers)."""
    out: dict[int, np.ndarray] = {}
    start = 0
    for s in segments:
        if isinstance(s, NumericSegment) and len(s.columns) == 1 and s.ops and s.ops[-1].lookup is not None:
            lookup = s.ops[-1].lookup
            extra = [v for v in (lookup.unknown, lookup.missing) if not np.isnan(v)]
            out[start] = np.unique(np.concatenate([lookup.codes, np.array(extra, np.float32)]).astype(np.float32))
        start += segment_width(s)
    return out


def has_lookup(segments: list[Segment]) -> bool:
    return any(op.lookup is not None for s in segments if not isinstance(s, IndicatorSegment) for op in s.ops)


def compares_scaled_categories(segments: list[Segment]) -> bool:
    """Whether a one-hot encoder compares values computed by arithmetic (within a tolerance)."""
    return any(isinstance(s, OneHotSegment) and s.tolerance is not None for s in segments)


def segment_width(s: Segment) -> int:
    return s.width if isinstance(s, OneHotSegment) else len(s.columns)


def output_width(segments: list[Segment]) -> int:
    return sum(segment_width(s) for s in segments)


def apply_lookup(lookup: Lookup, v: np.ndarray) -> np.ndarray:
    out = np.full(v.shape, lookup.unknown, dtype=np.float32)
    for key, code in zip(lookup.keys, lookup.codes, strict=True):
        out[v == key] = code
    out[np.isnan(v)] = lookup.missing
    return out


def apply_op(op: Op, v: np.ndarray) -> np.ndarray:
    if op.lookup is not None:
        return apply_lookup(op.lookup, v)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # log(-1) is NaN, as in scikit-learn
        if op.kind == "fill":
            return np.where(np.isnan(v), op.value, v)
        if op.kind == "log1p":
            return np.log(v + np.float32(1.0))  # the graph's Log(x + 1), not numpy's log1p
        if op.kind in UNARY:
            return getattr(np, op.kind)(v)
        binary = {"sub": np.subtract, "div": np.divide, "mul": np.multiply, "add": np.add}
        binary.update({"max": np.maximum, "min": np.minimum})
        return binary[op.kind](v, op.value)


def apply_segments(segments: list[Segment], x: np.ndarray) -> np.ndarray:
    """Reference implementation in float32, the arithmetic the emitted graphs do."""
    x = np.asarray(x, dtype=np.float32)
    parts = []
    for s in segments:
        if isinstance(s, IndicatorSegment):
            parts.append(np.isnan(x[:, s.columns]).astype(np.float32))
            continue
        v = x[:, s.columns] if isinstance(s, NumericSegment) else x[:, [s.column]]
        for op in s.ops:
            v = apply_op(op, v)
        if isinstance(s, OneHotSegment):
            hit = (v == s.categories) if s.tolerance is None else (np.abs(v - s.categories) <= s.tolerance)
            v = np.concatenate([hit, np.isnan(v)], axis=1) if s.nan_category else hit
        parts.append(np.asarray(v, dtype=np.float32))
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
