"""Preprocessing steps (scalers, imputation, one-hot encoding, column transformers) as plain data.

A fitted preprocessing chain is traced column by column into `Segment`s that the emitters turn into
standard ops (Gather, IsNaN/Where, Sub, Mul, Equal/Cast, Concat), never `ai.onnx.ml` ops: such graphs
load faster and quantize cleanly, and the scaling stays *before* the first layer instead of being folded
into its weights (folding loses accuracy under INT8).

Each output column of the chain is one of:
    numeric  y = (fill_nan(x[col], fill) - offset) * scale
    one-hot  y = 1.0 if fill_nan(x[col], fill) == category else 0.0
Consecutive numeric columns form a `NumericSegment`; the one-hot columns of one source column form a
`OneHotSegment`. `apply_segments` is the numpy reference the emitted graphs are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from model_compiler.errors import UnsupportedModelError


@dataclass(frozen=True)
class _Num:
    col: int
    fill: float | None = None
    offset: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class _OneHot:
    col: int
    fill: float | None
    category: float


@dataclass(frozen=True)
class NumericSegment:
    columns: np.ndarray  # int64 source columns
    fill: np.ndarray | None  # float32 per column, where imputed (NaN elsewhere means "not imputed")
    offset: np.ndarray | None
    scale: np.ndarray | None


@dataclass(frozen=True)
class OneHotSegment:
    column: int
    fill: float | None
    categories: np.ndarray  # float32, one output column each


Segment = NumericSegment | OneHotSegment


def _name(step: Any) -> str:
    return type(step).__name__


def trace_step(step: Any, state: list[Any]) -> list[Any]:
    """The output columns of a fitted preprocessing `step` applied to columns `state`."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

    if step is None or (isinstance(step, str) and step == "passthrough"):
        return state
    if isinstance(step, Pipeline):
        for _, sub in step.steps:
            state = trace_step(sub, state)
        return state
    if isinstance(step, StandardScaler):
        n = len(state)
        mean = step.mean_ if step.with_mean else np.zeros(n)
        scale = step.scale_ if step.with_std else np.ones(n)
        return [_affine(c, float(m), 1.0 / float(s), step) for c, m, s in zip(state, mean, scale, strict=True)]
    if isinstance(step, MinMaxScaler):
        if step.clip:
            raise UnsupportedModelError("MinMaxScaler(clip=True)")
        # sklearn: y = x * scale_ + min_  ==  (x - (-min_ / scale_)) * scale_
        pairs = zip(state, step.min_, step.scale_, strict=True)
        return [_affine(c, -float(m) / float(s), float(s), step) for c, m, s in pairs]
    if isinstance(step, SimpleImputer):
        return _trace_imputer(step, state)
    if isinstance(step, OneHotEncoder):
        return _trace_onehot(step, state)
    if isinstance(step, ColumnTransformer):
        return _trace_column_transformer(step, state)
    raise UnsupportedModelError(f"{_name(step)} as a preprocessing step")


def _affine(c: Any, offset: float, scale: float, step: Any) -> _Num:
    if not isinstance(c, _Num):
        raise UnsupportedModelError(f"{_name(step)} after one-hot encoding")
    if c.scale == 0.0 or not np.isfinite(scale) or not np.isfinite(offset):
        raise UnsupportedModelError(f"{_name(step)} with a degenerate (zero or infinite) scale")
    # (((x - o1) * s1) - o2) * s2  ==  (x - (o1 + o2 / s1)) * (s1 * s2)
    return replace(c, offset=c.offset + offset / c.scale, scale=c.scale * scale)


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
        if not isinstance(c, _Num):
            raise UnsupportedModelError("SimpleImputer after one-hot encoding")
        if c.fill is not None:
            out.append(c)  # already imputed upstream: nothing is missing any more
            continue
        # imputing after scaling with f' equals imputing before with the raw value that scales to f'
        out.append(replace(c, fill=float(fill) / c.scale + c.offset))
    return out


def _trace_onehot(step: Any, state: list[Any]) -> list[Any]:
    if getattr(step, "infrequent_categories_", None) is not None and any(
        cats is not None for cats in step.infrequent_categories_
    ):
        raise UnsupportedModelError("OneHotEncoder with infrequent categories (min_frequency / max_categories)")
    drop = step.drop_idx_ if step.drop_idx_ is not None else [None] * len(state)
    out: list[Any] = []
    for c, cats, dropped in zip(state, step.categories_, drop, strict=True):
        if not isinstance(c, _Num) or c.offset != 0.0 or c.scale != 1.0:
            raise UnsupportedModelError("OneHotEncoder after scaling or another encoder")
        if cats.dtype.kind not in "iuf":
            raise UnsupportedModelError(f"OneHotEncoder with non-numeric categories ({cats.dtype})")
        values = np.asarray(cats, dtype=np.float64)
        if np.isnan(values).any():
            raise UnsupportedModelError("OneHotEncoder with NaN as a category")
        for i, v in enumerate(values):
            if dropped is not None and i == dropped:
                continue
            out.append(_OneHot(col=c.col, fill=c.fill, category=float(v)))
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
        if not cols:
            continue
        out.extend(trace_step(transformer, cols))
    return out


def trace(steps: list[Any], n_features: int) -> list[Segment]:
    """Segments computing the output of `steps` (fitted, in order) from `n_features` raw columns."""
    state: list[Any] = [_Num(col=j) for j in range(n_features)]
    for step in steps:
        state = trace_step(step, state)
    return _segments(state)


def _segments(state: list[Any]) -> list[Segment]:
    segments: list[Segment] = []
    i = 0
    while i < len(state):
        c = state[i]
        j = i + 1
        if isinstance(c, _Num):
            while j < len(state) and isinstance(state[j], _Num):
                j += 1
            run = state[i:j]
            fill = np.array([np.nan if r.fill is None else r.fill for r in run], dtype=np.float32)
            offset = np.array([r.offset for r in run], dtype=np.float32)
            scale = np.array([r.scale for r in run], dtype=np.float32)
            segments.append(
                NumericSegment(
                    columns=np.array([r.col for r in run], dtype=np.int64),
                    fill=None if np.isnan(fill).all() else fill,
                    offset=None if not offset.any() else offset,
                    scale=None if (scale == 1.0).all() else scale,
                )
            )
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
    return s.fill is None and s.offset is None and s.scale is None and np.array_equal(s.columns, np.arange(n_features))


def imputes(segments: list[Segment]) -> bool:
    return any(s.fill is not None for s in segments)


def output_width(segments: list[Segment]) -> int:
    return sum(len(s.columns) if isinstance(s, NumericSegment) else len(s.categories) for s in segments)


def apply_segments(segments: list[Segment], x: np.ndarray) -> np.ndarray:
    """Reference implementation in float32, the arithmetic the emitted graphs do."""
    x = np.asarray(x, dtype=np.float32)
    parts = []
    for s in segments:
        if isinstance(s, NumericSegment):
            v = x[:, s.columns]
            if s.fill is not None:
                v = np.where(np.isnan(v) & ~np.isnan(s.fill), s.fill, v)
            if s.offset is not None:
                v = v - s.offset
            if s.scale is not None:
                v = v * s.scale
        else:
            v = x[:, [s.column]]
            if s.fill is not None:
                v = np.where(np.isnan(v), np.float32(s.fill), v)
            v = (v == s.categories).astype(np.float32)
        parts.append(v.astype(np.float32))
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
