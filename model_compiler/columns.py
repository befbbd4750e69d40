"""Named, typed input columns on the compiler's side: the manifest's `io.columns`, and mixed-type data
(a pandas DataFrame) to and from the float batch a device builds.

A model fitted on a DataFrame names its columns (`feature_names_in_`); the held-out DataFrame tells each
column's type (float, integer, string); the traced encoders tell a string column's categories
(`preprocess.RawColumns`). Held-out data is encoded by the agent's own `encode_columns`, so the gate
judges exactly what a device computes; synthetic self-test rows are decoded back into a DataFrame for
scikit-learn to predict on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.errors import BadInputError as AgentBadInput
from edge_agent.serving.columns import FLOAT, INTEGER, STRING, encode_columns
from model_compiler.errors import BadInputError, UnsupportedModelError
from model_compiler.preprocess import RawColumns
from model_compiler.segments import IndicatorSegment, OneHotSegment, Segment
from protocols.v1 import messages_pb2 as pb

# what a device sends for an unknown category, decoded for scikit-learn (a string no encoder knows)
UNKNOWN_CATEGORY = "\x00unknown"


def is_frame(x: Any) -> bool:
    return hasattr(x, "columns") and hasattr(x, "dtypes") and hasattr(x, "iloc")


def frame_dtypes(x: Any) -> dict[str, str]:
    """Each DataFrame column's type: "float", "integer" or "string" (object, string and category)."""
    out: dict[str, str] = {}
    for name, dtype in x.dtypes.items():
        kind = getattr(dtype, "kind", "O")
        if kind == "f":
            out[str(name)] = FLOAT
        elif kind in "iub":
            out[str(name)] = INTEGER
        else:
            out[str(name)] = STRING
    return out


def _column_accepts_missing(j: int, segments: list[Segment], native_missing: bool, raw: RawColumns) -> bool:
    """Whether NaN in raw column j is what the fitted pipeline handles (imputed, encoded, or routed by the
    trees themselves), rather than an error in scikit-learn."""
    if j in raw.refuses_missing:
        return False
    for s in segments:
        # one-hot: NaN is its own category, or matches none (all zeros, as handle_unknown="ignore"
        # gives; an encoder that raises on it put the column in raw.refuses_missing)
        if isinstance(s, IndicatorSegment | OneHotSegment) or j not in s.columns:
            continue
        handled = any(op.kind == "fill" or (op.lookup is not None and not np.isnan(op.lookup.missing)) for op in s.ops)
        if not handled and not native_missing:
            return False
    return True


def column_specs(
    *,
    n_features: int,
    feature_names: list[str],
    dtypes: dict[str, str] | None,
    raw: RawColumns,
    segments: list[Segment],
    native_missing: bool,
) -> list[pb.ColumnSpec]:
    """One ColumnSpec per raw input column, in order."""
    specs = []
    for j in range(n_features):
        name = feature_names[j] if j < len(feature_names) else f"x{j}"
        dtype = (dtypes or {}).get(name, FLOAT)
        categories = raw.categories.get(j, [])
        if categories and dtype != STRING:
            raise BadInputError(f"column {name!r}: the model encodes it as strings, the data holds {dtype} values")
        specs.append(
            pb.ColumnSpec(
                name=name,
                dtype=dtype,
                categories=categories,
                accepts_missing=_column_accepts_missing(j, segments, native_missing, raw),
                refuses_unknown=j in raw.refuses_unknown,
            )
        )
    return specs


def encode_frame(x: Any, specs: list[pb.ColumnSpec], what: str) -> np.ndarray:
    """A DataFrame as the float32 batch a device builds from the same named columns."""
    names = [str(c) for c in x.columns]
    wanted = [s.name for s in specs]
    if sorted(names) != sorted(wanted):
        raise BadInputError(f"{what}: columns {names} differ from the model's {wanted}")
    values: dict[str, Any] = {}
    for spec in specs:
        column = x[spec.name]
        if spec.dtype == STRING:
            values[spec.name] = column.astype(object).tolist()
        else:
            values[spec.name] = column.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        return encode_columns(specs, values)
    except AgentBadInput as exc:
        raise BadInputError(f"{what}: {exc}") from None


def decode_frame(x: np.ndarray, specs: list[pb.ColumnSpec]) -> Any:
    """The DataFrame scikit-learn reads for the float batch `x` (a device's encoding of named columns)."""
    import pandas as pd

    data: dict[str, Any] = {}
    for j, spec in enumerate(specs):
        v = np.asarray(x[:, j], dtype=np.float64)
        if spec.dtype == STRING:
            cats = list(spec.categories)
            data[spec.name] = pd.Series(
                [np.nan if np.isnan(c) else (cats[int(c)] if 0 <= c < len(cats) else UNKNOWN_CATEGORY) for c in v],
                dtype=object,
            )
        elif spec.dtype == INTEGER and not np.isnan(v).any():
            data[spec.name] = v.astype(np.int64)
        else:
            data[spec.name] = v
    return pd.DataFrame(data)


def snap_codes(x: np.ndarray, specs: list[pb.ColumnSpec]) -> np.ndarray:
    """Synthetic rows drawn from the reference bins, with string and integer columns set to whole
    numbers (a category's bin spans its code +- 0.5)."""
    x = x.copy()
    for j, spec in enumerate(specs):
        if spec.dtype in (STRING, INTEGER):
            x[:, j] = np.floor(x[:, j] + np.float32(0.5))
    return x


def check_named(x: Any, analysis_names: list[str], raw: RawColumns) -> None:
    if raw.categories and not is_frame(x):
        raise UnsupportedModelError(
            "a model with string categories needs its held-out data as a DataFrame (pickle, Parquet or CSV)"
        )
    if is_frame(x) and not analysis_names:
        raise BadInputError("held-out data is a DataFrame, but the model was not fitted on one (no feature names)")
