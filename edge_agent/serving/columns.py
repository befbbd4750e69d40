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
    index = {c: float(i) for i, c in enumerate(spec.categories)}
    out = np.array([index.get(v, -1.0) for v in values], dtype=np.float32)  # -1: not a known category (yet)
    for i in np.flatnonzero(out < 0).tolist():  # rare: unknown, missing, or a category sent as a non-str
        v = values[i]
        code = None if is_missing_string(v) else index.get(str(v))
        out[i] = np.nan if is_missing_string(v) else (len(index) if code is None else code)
    if missing is not None:
        out[missing] = np.nan
    if spec.refuses_unknown:
        unknown = {str(values[i]) for i in np.flatnonzero(out == len(index)).tolist()}
        if unknown:
            shown = ", ".join(repr(b) for b in sorted(unknown)[:5])
            raise BadInputError(f"column {spec.name!r}: unknown categor{'y' if len(unknown) == 1 else 'ies'} {shown}")
    return out


def encode_columns(
    columns: Sequence[pb.ColumnSpec],
    values: Mapping[str, Any],
    missing: Mapping[str, np.ndarray] | None = None,
    *,
    rows: int | None = None,
) -> np.ndarray:
    """The float32 batch for `columns` (the manifest's io.columns) from named column values: a sequence
    of strings (string columns) or numbers per name. `missing` optionally marks missing rows per name."""
    if len(values) != len(columns) or any(c.name not in values for c in columns):
        known = {c.name for c in columns}
        extra = sorted(set(values) - known)
        if extra:
            raise BadInputError(f"unknown column(s) {', '.join(map(repr, extra))}; the model takes {sorted(known)}")
        absent = [c.name for c in columns if c.name not in values]
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
            continue
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # too large for float32 -> inf, refused below
                out[:, j] = values[spec.name]
        except (TypeError, ValueError):
            raise BadInputError(f"column {spec.name!r} ({spec.dtype}): values are not numbers") from None
        if mask is not None:
            out[mask, j] = np.nan
    _check(columns, out)
    return out


def _check(columns: Sequence[pb.ColumnSpec], out: np.ndarray) -> None:
    """Whole-batch checks (one numpy pass each, not one per column): infinities, missing values where a
    column takes none, fractions in integer columns."""
    if not np.isfinite(np.add.reduce(out, axis=None, dtype=np.float64)):
        bad = np.isinf(out).any(axis=0)
        if bad.any():
            raise BadInputError(f"column {columns[int(np.argmax(bad))].name!r}: infinite value (or too large)")
        refused = np.isnan(out).any(axis=0) & ~np.array([c.accepts_missing for c in columns])
        if refused.any():
            name = columns[int(np.argmax(refused))].name
            raise BadInputError(f"column {name!r}: missing value, which this model does not accept")
    integers = [j for j, c in enumerate(columns) if c.dtype == INTEGER]
    if integers:
        part = out[:, integers]
        fraction = np.isfinite(part) & (part != np.round(part))
        if fraction.any():
            row, k = np.argwhere(fraction)[0]
            raise BadInputError(f"column {columns[integers[k]].name!r} (integer): value {float(part[row, k])!r}")


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
