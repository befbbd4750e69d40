"""Preprocessing steps (scalers, imputation, one-hot encoding, column transformers) as plain data.

A fitted preprocessing chain is traced column by column into `Segment`s that the emitters turn into
standard ops (Gather, IsNaN/Where, Sub, Div, Mul, Add, Equal/Cast, Concat), never `ai.onnx.ml` ops: such
graphs load faster and quantize cleanly, and the scaling stays *before* the first layer instead of being
folded into its weights (folding loses accuracy under INT8).

Each column keeps scikit-learn's own sequence of float operations, not a folded equivalent:
StandardScaler is `(x - mean) / scale`, MinMaxScaler `x * scale + min`, SimpleImputer fills NaN. The
artifact then differs from scikit-learn by float32 rounding only, which matters for a tree that splits
between two training values one float32 step apart (folding into one multiply-add flipped 0.6% of the
digits predictions of a scaled random forest; this order flips about half as many).

Output columns: numeric (a chain of `Op`s on one source column) or one-hot (1.0 where the source column,
after imputation, equals a category). Consecutive numeric columns with the same chain of op kinds form a
`NumericSegment`; the one-hot columns of one source column an `OneHotSegment`. `apply_segments` is the
numpy reference the emitted graphs are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from model_compiler.errors import UnsupportedModelError

OpKind = Literal["fill", "sub", "div", "mul", "add"]


@dataclass(frozen=True)
class _Num:
    col: int
    ops: tuple[tuple[OpKind, float], ...] = ()


@dataclass(frozen=True)
class _OneHot:
    col: int
    fill: float | None
    category: float


@dataclass(frozen=True)
class Op:
    kind: OpKind  # fill: NaN -> value; sub/div/mul/add: elementwise with value
    value: np.ndarray  # float32, one per column of the segment


@dataclass(frozen=True)
class NumericSegment:
    columns: np.ndarray  # int64 source columns
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class OneHotSegment:
    column: int
    fill: float | None
    categories: np.ndarray  # float32, one output column each


Segment = NumericSegment | OneHotSegment


def _name(step: Any) -> str:
    return type(step).__name__


def _numeric(c: Any, step: Any) -> _Num:
    if not isinstance(c, _Num):
        raise UnsupportedModelError(f"{_name(step)} after one-hot encoding")
    return c


def trace_step(step: Any, state: list[Any]) -> list[Any]:
    """The output columns of a fitted preprocessing `step` applied to columns `state`."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, StandardScaler

    if step is None or (isinstance(step, str) and step == "passthrough"):
        return state
    if isinstance(step, FunctionTransformer) and step.func is None:  # identity (ColumnTransformer's passthrough)
        return state
    if isinstance(step, Pipeline):
        for _, sub in step.steps:
            state = trace_step(sub, state)
        return state
    if isinstance(step, StandardScaler):
        out = []
        for j, c in enumerate(state):
            ops = list(_numeric(c, step).ops)
            if step.with_mean:
                ops.append(("sub", float(step.mean_[j])))
            if step.with_std:
                ops.append(("div", float(step.scale_[j])))
            out.append(_Num(c.col, tuple(ops)))
        return out
    if isinstance(step, MinMaxScaler):
        if step.clip:
            raise UnsupportedModelError("MinMaxScaler(clip=True)")
        return [
            _Num(c.col, (*_numeric(c, step).ops, ("mul", float(step.scale_[j])), ("add", float(step.min_[j]))))
            for j, c in enumerate(state)
        ]
    if isinstance(step, SimpleImputer):
        return _trace_imputer(step, state)
    if isinstance(step, OneHotEncoder):
        return _trace_onehot(step, state)
    if isinstance(step, ColumnTransformer):
        return _trace_column_transformer(step, state)
    raise UnsupportedModelError(f"{_name(step)} as a preprocessing step")


def _trace_imputer(step: Any, state: list[Any]) -> list[Any]:
    if step.add_indicator:
        raise UnsupportedModelError("SimpleImputer(add_indicator=True)")
    if not (isinstance(step.missing_values, float) and np.isnan(step.missing_values)):
        raise UnsupportedModelError(f"SimpleImputer(missing_values={step.missing_values!r}) (only NaN)")
    stats = np.asarray(step.statistics_, dtype=np.float64)
    out = []
    for c, fill in zip(state, stats, strict=True):
        if np.isnan(fill):  # an all-missing column that sklearn drops (keep_empty_features=False)
            continue
        out.append(_Num(c.col, (*_numeric(c, step).ops, ("fill", float(fill)))))
    return out


def _trace_onehot(step: Any, state: list[Any]) -> list[Any]:
    if getattr(step, "infrequent_categories_", None) is not None and any(
        cats is not None for cats in step.infrequent_categories_
    ):
        raise UnsupportedModelError("OneHotEncoder with infrequent categories (min_frequency / max_categories)")
    drop = step.drop_idx_ if step.drop_idx_ is not None else [None] * len(state)
    out: list[Any] = []
    for c, cats, dropped in zip(state, step.categories_, drop, strict=True):
        kinds = [k for k, _ in _numeric(c, step).ops]
        if kinds not in ([], ["fill"]):
            raise UnsupportedModelError("OneHotEncoder after scaling")
        if cats.dtype.kind not in "iuf":
            raise UnsupportedModelError(f"OneHotEncoder with non-numeric categories ({cats.dtype})")
        values = np.asarray(cats, dtype=np.float64)
        if np.isnan(values).any():
            raise UnsupportedModelError("OneHotEncoder with NaN as a category")
        fill = c.ops[0][1] if kinds else None
        out.extend(
            _OneHot(col=c.col, fill=fill, category=float(v))
            for i, v in enumerate(values)
            if dropped is None or i != dropped
        )
    return out


def _trace_column_transformer(step: Any, state: list[Any]) -> list[Any]:
    indices = getattr(step, "_transformer_to_input_indices", None)
    if indices is None:
        raise UnsupportedModelError("ColumnTransformer from this scikit-learn version")
    out: list[Any] = []
    for name, transformer, _ in step.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        cols = [state[i] for i in indices[name]]
        if cols:
            out.extend(trace_step(transformer, cols))
    return out


def trace(steps: list[Any], n_features: int) -> list[Segment]:
    """Segments computing the output of `steps` (fitted, in order) from `n_features` raw columns."""
    state: list[Any] = [_Num(col=j) for j in range(n_features)]
    for step in steps:
        state = trace_step(step, state)
    return _segments(state)


def _kinds(c: Any) -> tuple[str, ...] | None:
    return tuple(k for k, _ in c.ops) if isinstance(c, _Num) else None


def _segments(state: list[Any]) -> list[Segment]:
    segments: list[Segment] = []
    i = 0
    while i < len(state):
        c = state[i]
        j = i + 1
        if isinstance(c, _Num):
            while j < len(state) and _kinds(state[j]) == _kinds(c):
                j += 1
            run = state[i:j]
            ops = tuple(
                Op(kind, np.array([r.ops[k][1] for r in run], dtype=np.float32)) for k, (kind, _) in enumerate(c.ops)
            )
            segments.append(NumericSegment(columns=np.array([r.col for r in run], dtype=np.int64), ops=ops))
        else:
            while j < len(state) and isinstance(state[j], _OneHot) and state[j].col == c.col:
                j += 1
            cats = np.array([r.category for r in state[i:j]], dtype=np.float32)
            segments.append(OneHotSegment(column=c.col, fill=c.fill, categories=cats))
        i = j
    return segments


def is_identity(segments: list[Segment], n_features: int) -> bool:
    if len(segments) != 1 or not isinstance(segments[0], NumericSegment):
        return False
    s = segments[0]
    return not s.ops and np.array_equal(s.columns, np.arange(n_features))


def imputes(segments: list[Segment]) -> bool:
    return any(
        (isinstance(s, NumericSegment) and any(op.kind == "fill" for op in s.ops))
        or (isinstance(s, OneHotSegment) and s.fill is not None)
        for s in segments
    )


def output_width(segments: list[Segment]) -> int:
    return sum(len(s.columns) if isinstance(s, NumericSegment) else len(s.categories) for s in segments)


def apply_op(op: Op, v: np.ndarray) -> np.ndarray:
    if op.kind == "fill":
        return np.where(np.isnan(v), op.value, v)
    if op.kind == "sub":
        return v - op.value
    if op.kind == "div":
        return v / op.value
    if op.kind == "mul":
        return v * op.value
    return v + op.value


def apply_segments(segments: list[Segment], x: np.ndarray) -> np.ndarray:
    """Reference implementation in float32, the arithmetic the emitted graphs do."""
    x = np.asarray(x, dtype=np.float32)
    parts = []
    for s in segments:
        if isinstance(s, NumericSegment):
            v = x[:, s.columns]
            for op in s.ops:
                v = apply_op(op, v)
        else:
            v = x[:, [s.column]]
            if s.fill is not None:
                v = np.where(np.isnan(v), np.float32(s.fill), v)
            v = (v == s.categories).astype(np.float32)
        parts.append(v.astype(np.float32))
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
