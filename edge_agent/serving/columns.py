"""Named, typed input columns to the float batch an artifact takes, with numpy only (no pandas here).

A manifest's `io.columns` names each input column (`ColumnSpec`: float, integer or string, with the
categories of a string column). A caller sends a batch as named columns; `encode_columns` lays them out
in the schema's order as one float32 (rows, n_features) array: numbers as they are, a string category as
its index in `categories`, an unknown one as len(categories) (the fitted encoder then gives what
scikit-learn does: all zeros for `handle_unknown="ignore"`, its `unknown_value` for an OrdinalEncoder),
a missing value as NaN. What the fitted pipeline would refuse is refused here, naming the column: a
missing value where the column does not accept one, an unknown category where its encoder raises on
one, a non-integer in an integer column, a column missing or unknown.

The compiler encodes its held-out DataFrame through this same function, so what it gates is what a
device computes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edge_agent.errors import BadInputError
from protocols.v1 import messages_pb2 as pb

FLOAT, INTEGER, STRING = "float", "integer", "string"
DTYPES = (FLOAT, INTEGER, STRING)


def is_missing_string(v: Any) -> bool:
    """None or a float NaN (what pandas puts in an object column for a missing value)."""
    return v is None or (isinstance(v, float) and v != v)


def encode_string_column(spec: pb.ColumnSpec, values: Sequence[Any], missing: np.ndarray | None = None) -> np.ndarray:
    """Codes of a string column: index in spec.categories; unknown -> len(categories); missing -> NaN."""
    index = {c: i for i, c in enumerate(spec.categories)}
    unknown = float(len(spec.categories))
    out = np.empty(len(values), dtype=np.float32)
    bad: list[str] = []
    for i, v in enumerate(values):
        if (missing is not None and missing[i]) or is_missing_string(v):
            out[i] = np.nan
            continue
        code = index.get(str(v))
        if code is None:
            bad.append(str(v))
            out[i] = unknown
        else:
            out[i] = code
    if bad and spec.refuses_unknown:
        shown = ", ".join(repr(b) for b in sorted(set(bad))[:5])
        raise BadInputError(f"column {spec.name!r}: unknown categor{'y' if len(set(bad)) == 1 else 'ies'} {shown}")
    return out


def encode_number_column(spec: pb.ColumnSpec, values: Any, missing: np.ndarray | None = None) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):
            out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInputError(f"column {spec.name!r} ({spec.dtype}): values are not numbers") from None
    out = out.reshape(-1).copy()
    if missing is not None:
        out[missing] = np.nan
    if np.isinf(out).any():
        raise BadInputError(f"column {spec.name!r}: infinite value")
    if spec.dtype == INTEGER:
        finite = out[np.isfinite(out)]
        if (finite != np.round(finite)).any():
            raise BadInputError(f"column {spec.name!r} (integer): value {finite[finite != np.round(finite)][0]!r}")
    return out.astype(np.float32)


def encode_columns(
    columns: Sequence[pb.ColumnSpec],
    values: Mapping[str, Any],
    missing: Mapping[str, np.ndarray] | None = None,
    *,
    rows: int | None = None,
) -> np.ndarray:
    """The float32 batch for `columns` (the manifest's io.columns) from named column values: a sequence
    of strings (string columns) or numbers per name. `missing` optionally marks missing rows per name."""
    known = {c.name for c in columns}
    extra = sorted(set(values) - known)
    if extra:
        raise BadInputError(f"unknown column(s) {', '.join(map(repr, extra))}; the model takes {sorted(known)}")
    absent = [c.name for c in columns if c.name not in values]
    if absent:
        raise BadInputError(f"missing column(s) {', '.join(map(repr, absent))}")
    lengths = {len(values[c.name]) for c in columns}
    if len(lengths) != 1 or (rows is not None and lengths != {rows}):
        sizes = {c.name: len(values[c.name]) for c in columns}
        raise BadInputError(f"columns differ in length (or from rows={rows}): {sizes}")
    n = lengths.pop()
    if n == 0:
        raise BadInputError("no rows")
    out = np.empty((n, len(columns)), dtype=np.float32)
    for j, spec in enumerate(columns):
        mask = None
        if missing is not None and len(missing.get(spec.name, ())):
            mask = np.asarray(missing[spec.name], dtype=bool)
            if mask.shape != (n,):
                raise BadInputError(f"column {spec.name!r}: {mask.size} missing flags for {n} rows")
        if spec.dtype == STRING:
            out[:, j] = encode_string_column(spec, values[spec.name], mask)
        else:
            out[:, j] = encode_number_column(spec, values[spec.name], mask)
        if not spec.accepts_missing and np.isnan(out[:, j]).any():
            raise BadInputError(f"column {spec.name!r}: missing value, which this model does not accept")
    return out


def missing_refused(columns: Sequence[pb.ColumnSpec], x: np.ndarray) -> str | None:
    """The name of the first column holding NaN that does not accept a missing value, else None (for a
    float batch sent in the plain matrix form to a model whose manifest names its columns)."""
    if not len(columns) or x.ndim != 2 or x.shape[1] != len(columns):
        return None
    nan = np.isnan(x).any(axis=0)
    for j in np.flatnonzero(nan):
        spec = columns[int(j)]
        if not spec.accepts_missing:
            return spec.name
    return None
