"""Tracing fitted preprocessing steps (scalers, imputation, encoders, elementwise functions, column
transformers) into `segments.Segment`s, which the emitters turn into standard ops.

Standard ops (Gather, IsNaN/Where, Sub, Div, Mul, Add, Max/Min, Log/Exp/Sqrt/Abs, Equal/Cast, MatMul,
Concat), never `ai.onnx.ml` ops: such graphs load faster and quantize cleanly, and the scaling stays
*before* the first layer instead of being folded into its weights (folding loses accuracy under INT8).

Each column keeps scikit-learn's own sequence of float operations, not a folded equivalent:
StandardScaler is `(x - mean) / scale`, MinMaxScaler `x * scale + min` (then clipped when `clip=True`),
SimpleImputer fills NaN. The artifact then differs from scikit-learn by float32 rounding only, which
matters for a tree that splits between two training values one float32 step apart (folding into one
multiply-add flipped 0.6% of the digits predictions of a scaled random forest; this order flips about
half as many). A step the compiler cannot trace is refused, naming it (`step 'name': ...`).
"""

from __future__ import annotations

import contextvars
import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_compiler.errors import UnsupportedModelError
from model_compiler.segments import (
    UNARY,
    IndicatorSegment,
    Lookup,
    NumericSegment,
    OneHotSegment,
    Op,
    OpKind,
    Segment,
)

# FunctionTransformer functions that are one elementwise ONNX op (log1p: Log after Add 1)
_FUNCTIONS = {np.log: "log", np.log1p: "log1p", np.exp: "exp", np.sqrt: "sqrt", np.abs: "abs"}
# one-hot after arithmetic: |value - category| <= ONEHOT_TOLERANCE x max(1, |category|)
ONEHOT_TOLERANCE = 1e-5


@dataclass(frozen=True)
class _Num:
    col: int
    ops: tuple[tuple[OpKind, Any], ...] = ()


@dataclass(frozen=True)
class _OneHot:
    col: int
    ops: tuple[tuple[OpKind, Any], ...]
    category: float  # NaN: the missing-value category


@dataclass(frozen=True)
class _Indicator:
    col: int  # 1.0 where the source column is NaN (SimpleImputer(add_indicator=True))


@dataclass
class RawColumns:
    """What the encoders tell about the raw input columns, gathered while tracing: the categories of
    each string column (a device sends category i as the number i), which raise on an unknown category,
    which raise on a missing value."""

    categories: dict[int, list[str]] = field(default_factory=dict)
    refuses_unknown: set[int] = field(default_factory=set)
    refuses_missing: set[int] = field(default_factory=set)

    def code(self, col: int, category: str) -> float:
        known = self.categories.setdefault(col, [])
        if category not in known:
            known.append(category)
        return float(known.index(category))


_RAW: contextvars.ContextVar[RawColumns] = contextvars.ContextVar("raw_columns")


def _raw() -> RawColumns:
    raw = _RAW.get(None)
    if raw is None:  # trace_step called on its own (tests): notes go nowhere
        raw = RawColumns()
        _RAW.set(raw)
    return raw


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _name(step: Any) -> str:
    return type(step).__name__


def _numeric(c: Any, step: Any) -> _Num:
    if isinstance(c, _OneHot):
        raise UnsupportedModelError(f"{_name(step)} after one-hot encoding")
    if isinstance(c, _Indicator):
        raise UnsupportedModelError(f"{_name(step)} after a missing-value indicator")
    return c


def _is_identity_function(step: Any) -> bool:
    """FunctionTransformer that leaves values as they are: ColumnTransformer's passthrough, or the
    check_array that HistGradientBoosting's own preprocessor runs on numeric columns."""
    func = step.func
    if func is None:
        return True
    from sklearn.utils.validation import check_array

    return isinstance(func, functools.partial) and func.func is check_array


def _function(step: Any, state: list[Any]) -> list[Any]:
    kind: OpKind | None = _FUNCTIONS.get(step.func)  # type: ignore[assignment]
    if kind is None or step.kw_args:
        func = getattr(step.func, "__name__", repr(step.func))
        raise UnsupportedModelError(
            f"FunctionTransformer(func={func}{', kw_args' if step.kw_args else ''}): only numpy's "
            f"{', '.join(_FUNCTIONS.values())} map to ONNX ops"
        )
    unary: tuple[OpKind, Any] = (kind, None)
    return [_Num(c.col, (*_numeric(c, step).ops, unary)) for c in state]


def _scale(step: Any, state: list[Any], ops_of: Any) -> list[Any]:
    return [_Num(c.col, (*_numeric(c, step).ops, *ops_of(j))) for j, c in enumerate(state)]


def trace_step(step: Any, state: list[Any]) -> list[Any]:
    """The output columns of a fitted preprocessing `step` applied to columns `state`."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import (
        FunctionTransformer,
        MaxAbsScaler,
        MinMaxScaler,
        OneHotEncoder,
        OrdinalEncoder,
        RobustScaler,
        StandardScaler,
    )

    if step is None or (isinstance(step, str) and step == "passthrough"):
        return state
    if isinstance(step, FunctionTransformer):
        return state if _is_identity_function(step) else _function(step, state)
    if isinstance(step, Pipeline):
        for name, sub in step.steps:
            state = _named(name, sub, state)
        return state
    if isinstance(step, StandardScaler):
        return _scale(
            step,
            state,
            lambda j: ([("sub", float(step.mean_[j]))] if step.with_mean else [])
            + ([("div", float(step.scale_[j]))] if step.with_std else []),
        )
    if isinstance(step, RobustScaler):
        return _scale(
            step,
            state,
            lambda j: ([("sub", float(step.center_[j]))] if step.with_centering else [])
            + ([("div", float(step.scale_[j]))] if step.with_scaling else []),
        )
    if isinstance(step, MaxAbsScaler):
        return _scale(step, state, lambda j: [("div", float(step.scale_[j]))])
    if isinstance(step, MinMaxScaler):
        low, high = step.feature_range
        clip = [("max", float(low)), ("min", float(high))] if step.clip else []
        return _scale(step, state, lambda j: [("mul", float(step.scale_[j])), ("add", float(step.min_[j])), *clip])
    if isinstance(step, SimpleImputer):
        return _trace_imputer(step, state)
    if isinstance(step, OneHotEncoder):
        return _trace_onehot(step, state)
    if isinstance(step, OrdinalEncoder):
        return _trace_ordinal(step, state)
    if isinstance(step, ColumnTransformer):
        return _trace_column_transformer(step, state)
    raise UnsupportedModelError(f"{_name(step)} as a preprocessing step")


def _named(name: str, step: Any, state: list[Any]) -> list[Any]:
    """trace_step, with the step's name in any refusal (a pipeline may hold several of one class)."""
    try:
        return trace_step(step, state)
    except UnsupportedModelError as exc:
        if exc.what.startswith("step "):
            raise
        raise UnsupportedModelError(f"step {name!r}: {exc.what}") from None


def _trace_imputer(step: Any, state: list[Any]) -> list[Any]:
    if not (isinstance(step.missing_values, float) and np.isnan(step.missing_values)):
        raise UnsupportedModelError(f"SimpleImputer(missing_values={step.missing_values!r}) (only NaN)")
    out: list[Any] = []
    for c, fill in zip(state, step.statistics_, strict=True):
        if isinstance(fill, str):  # a string column: filled with that category's code
            if c.ops:
                raise UnsupportedModelError("SimpleImputer on strings after another step")
            out.append(_Num(c.col, (("fill", _raw().code(c.col, fill)),)))
            continue
        if _is_missing(fill) or np.isnan(float(fill)):  # all-missing column sklearn drops (keep_empty_features=False)
            continue
        out.append(_Num(c.col, (*_numeric(c, step).ops, ("fill", float(fill)))))
    if step.add_indicator:
        for j in step.indicator_.features_:
            c = _numeric(state[j], step)
            if any(kind not in ("sub", "div", "mul", "add") for kind, _ in c.ops):  # these keep NaN as NaN
                raise UnsupportedModelError("SimpleImputer(add_indicator=True) after a step other than scaling")
            out.append(_Indicator(c.col))
    return out


def _categories(step: Any, cats: np.ndarray, c: Any) -> np.ndarray:
    """The categories as the numbers a device sends: themselves, or for strings their codes (RawColumns)."""
    if cats.dtype.kind in "iuf":
        return np.asarray(cats, dtype=np.float64)
    if not all(_is_missing(v) or isinstance(v, str) for v in cats):
        raise UnsupportedModelError(f"{_name(step)} with categories of mixed types ({cats.dtype})")
    if any(kind != "fill" for kind, _ in c.ops):
        raise UnsupportedModelError(f"{_name(step)} on strings after a step other than SimpleImputer")
    raw = _raw()
    if step.handle_unknown == "error":
        raw.refuses_unknown.add(c.col)
    return np.array([np.nan if _is_missing(v) else raw.code(c.col, str(v)) for v in cats], dtype=np.float64)


def _fills(ops: tuple[tuple[OpKind, Any], ...]) -> bool:
    return any(kind == "fill" for kind, _ in ops)


def _exact(ops: tuple[tuple[OpKind, Any], ...]) -> bool:
    """Whether a chain gives values a device computes exactly (no float arithmetic on them)."""
    return all(kind in ("fill", "lookup") for kind, _ in ops)


def _refuse_infrequent(step: Any) -> None:
    if getattr(step, "infrequent_categories_", None) is not None and any(
        cats is not None for cats in step.infrequent_categories_
    ):
        raise UnsupportedModelError(f"{_name(step)} with infrequent categories (min_frequency / max_categories)")


def _trace_onehot(step: Any, state: list[Any]) -> list[Any]:
    _refuse_infrequent(step)
    drop = step.drop_idx_ if step.drop_idx_ is not None else [None] * len(state)
    out: list[Any] = []
    for c, cats, dropped in zip(state, step.categories_, drop, strict=True):
        ops = _numeric(c, step).ops
        values = _categories(step, cats, c)
        if step.handle_unknown == "error" and not np.isnan(values).any() and not _fills(ops):
            _raw().refuses_missing.add(c.col)  # scikit-learn raises on NaN it has no category for
        if not _exact(ops):
            finite = np.unique(values[~np.isnan(values)])
            tolerance = ONEHOT_TOLERANCE * np.maximum(1.0, np.abs(finite))
            if finite.size > 1 and (np.diff(finite) <= 2 * tolerance[1:]).any():
                raise UnsupportedModelError(
                    "OneHotEncoder after scaling, with categories too close to tell apart in float32"
                )
        out.extend(
            _OneHot(col=c.col, ops=ops, category=float(v))
            for i, v in enumerate(values)
            if dropped is None or i != dropped
        )
    return out


def _trace_ordinal(step: Any, state: list[Any]) -> list[Any]:
    _refuse_infrequent(step)
    # scikit-learn raises on an unknown category unless told to encode it; a device cannot raise on one
    # row of a batch, so there the model sees it as missing (NaN), as HistGradientBoosting's own encoder does
    unknown = float(step.unknown_value) if step.handle_unknown == "use_encoded_value" else float("nan")
    out: list[Any] = []
    for c, cats in zip(state, step.categories_, strict=True):
        ops = _numeric(c, step).ops
        if not _exact(ops):
            raise UnsupportedModelError("OrdinalEncoder after scaling")
        values = _categories(step, cats, c)
        if step.handle_unknown == "error" and not np.isnan(values).any() and not _fills(ops):
            _raw().refuses_missing.add(c.col)  # scikit-learn raises on NaN it has no category for
        keys = values[~np.isnan(values)]
        missing = float(step.encoded_missing_value) if np.isnan(values).any() else unknown
        lookup = Lookup(keys.astype(np.float32), np.arange(len(keys), dtype=np.float32), missing, unknown)
        out.append(_Num(c.col, (*ops, ("lookup", lookup))))
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
            out.extend(_named(name, transformer, cols))
    return out


def trace(
    steps: list[Any], n_features: int, names: list[str] | None = None, raw: RawColumns | None = None
) -> list[Segment]:
    """Segments computing the output of `steps` (fitted, in order) from `n_features` raw columns; what
    the encoders tell about the raw columns goes into `raw`."""
    token = _RAW.set(raw if raw is not None else RawColumns())
    try:
        state: list[Any] = [_Num(col=j) for j in range(n_features)]
        for i, step in enumerate(steps):
            state = _named(names[i], step, state) if names else trace_step(step, state)
    finally:
        _RAW.reset(token)
    return _segments(state)


def _kinds(c: Any) -> tuple[str, ...] | None:
    if not isinstance(c, _Num) or any(kind == "lookup" for kind, _ in c.ops):
        return None  # a lookup column is a segment of its own
    return tuple(k for k, _ in c.ops)


def _ops(chains: list[tuple[tuple[OpKind, Any], ...]]) -> tuple[Op, ...]:
    """The Ops of columns whose chains have the same kinds: values side by side, one per column."""
    ops = []
    for k, (kind, value) in enumerate(chains[0]):
        if kind == "lookup":
            ops.append(Op(kind, np.zeros(0, np.float32), value))
        elif kind in UNARY:
            ops.append(Op(kind, np.zeros(0, np.float32)))
        else:
            ops.append(Op(kind, np.array([chain[k][1] for chain in chains], dtype=np.float32)))
    return tuple(ops)


def _segments(state: list[Any]) -> list[Segment]:
    segments: list[Segment] = []
    i = 0
    while i < len(state):
        c = state[i]
        j = i + 1
        if isinstance(c, _Num):
            kinds = _kinds(c)
            while kinds is not None and j < len(state) and _kinds(state[j]) == kinds:
                j += 1
            run = state[i:j]
            columns = np.array([r.col for r in run], dtype=np.int64)
            segments.append(NumericSegment(columns=columns, ops=_ops([r.ops for r in run])))
        elif isinstance(c, _Indicator):
            while j < len(state) and isinstance(state[j], _Indicator):
                j += 1
            segments.append(IndicatorSegment(np.array([r.col for r in state[i:j]], dtype=np.int64)))
        else:
            while j < len(state) and isinstance(state[j], _OneHot) and (state[j].col, state[j].ops) == (c.col, c.ops):
                j += 1
            cats = np.array([r.category for r in state[i:j]], dtype=np.float64)
            finite = cats[~np.isnan(cats)].astype(np.float32)
            tolerance = None
            if not _exact(c.ops):
                tolerance = (ONEHOT_TOLERANCE * np.maximum(1.0, np.abs(finite))).astype(np.float32)
            segments.append(OneHotSegment(c.col, _ops([c.ops]), finite, bool(np.isnan(cats).any()), tolerance))
        i = j
    return segments
