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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.errors import BadInputError
from protocols.v1 import messages_pb2 as pb

FLOAT, INTEGER, STRING = "float", "integer", "string"
DTYPES = (FLOAT, INTEGER, STRING)


def is_missing_string(v: Any) -> bool:
    """None or a float NaN (what pandas puts in an object column for a missing value)."""
    return v is None or (isinstance(v, float) and v != v)


@dataclass(frozen=True)
class _Column:
    name: str
    dtype: str
    index: dict[str, float]  # string columns: category -> code
    accepts_missing: bool
    refuses_unknown: bool


class ColumnCodec:
    """A manifest's io.columns read once into plain Python data (protobuf field reads cost more than
    the encoding itself), encoding any number of batches. The gRPC server keeps one per serving model."""

    def __init__(self, columns: Sequence[pb.ColumnSpec]) -> None:
        self.columns = [
            _Column(
                c.name,
                c.dtype,
                {k: float(i) for i, k in enumerate(c.categories)} if c.dtype == STRING else {},
                c.accepts_missing,
                c.refuses_unknown,
            )
            for c in columns
        ]
        self.names = {c.name for c in self.columns}
        self.refuses_missing = np.array([not c.accepts_missing for c in self.columns], dtype=bool)
        self.integers = [j for j, c in enumerate(self.columns) if c.dtype == INTEGER]

    def encode(
        self, values: Mapping[str, Any], missing: Mapping[str, Any] | None = None, *, rows: int | None = None
    ) -> np.ndarray:
        """The float32 batch from named column values: a sequence of strings (string columns) or numbers
        per name; `missing` optionally marks missing rows per name. BadInputError names the column."""
        columns = self.columns
        if len(values) != len(columns) or not self.names.issuperset(values):
            extra = sorted(set(values) - self.names)
            if extra:
                raise BadInputError(
                    f"unknown column(s) {', '.join(map(repr, extra))}; the model takes {sorted(self.names)}"
                )
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
        for j, column in enumerate(columns):
            mask = None
            if missing is not None and len(missing.get(column.name, ())):
                mask = np.asarray(missing[column.name], dtype=bool)
                if mask.shape != (n,):
                    raise BadInputError(f"column {column.name!r}: {mask.size} missing flags for {n} rows")
            if column.dtype == STRING:
                out[:, j] = _codes(column, values[column.name], mask)
                continue
            try:
                with np.errstate(over="ignore", invalid="ignore"):  # too large for float32 -> inf, refused below
                    out[:, j] = values[column.name]
            except (TypeError, ValueError):
                raise BadInputError(f"column {column.name!r} ({column.dtype}): values are not numbers") from None
            if mask is not None:
                out[mask, j] = np.nan
        self._check(out)
        return out

    def _check(self, out: np.ndarray) -> None:
        """Whole-batch checks (one numpy pass each, not one per column): infinities, missing values where
        a column takes none, fractions in integer columns."""
        if not np.isfinite(np.add.reduce(out, axis=None, dtype=np.float64)):
            bad = np.isinf(out).any(axis=0)
            if bad.any():
                raise BadInputError(f"column {self.columns[int(np.argmax(bad))].name!r}: infinite value (or too large)")
            refused = np.isnan(out).any(axis=0) & self.refuses_missing
            if refused.any():
                name = self.columns[int(np.argmax(refused))].name
                raise BadInputError(f"column {name!r}: missing value, which this model does not accept")
        if self.integers:
            part = out[:, self.integers]
            fraction = np.isfinite(part) & (part != np.round(part))
            if fraction.any():
                row, k = np.argwhere(fraction)[0]
                name = self.columns[self.integers[k]].name
                raise BadInputError(f"column {name!r} (integer): value {float(part[row, k])!r}")


def _codes(column: _Column, values: Sequence[Any], missing: np.ndarray | None) -> np.ndarray:
    """Codes of a string column: index in its categories; unknown -> len(categories); missing -> NaN."""
    index = column.index
    out = np.array([index.get(v, -1.0) for v in values], dtype=np.float32)  # -1: not a known category (yet)
    for i in np.flatnonzero(out < 0).tolist():  # rare: unknown, missing, or a category sent as a non-str
        v = values[i]
        code = None if is_missing_string(v) else index.get(str(v))
        out[i] = np.nan if is_missing_string(v) else (len(index) if code is None else code)
    if missing is not None:
        out[missing] = np.nan
    if column.refuses_unknown:
        unknown = {str(values[i]) for i in np.flatnonzero(out == len(index)).tolist()}
        if unknown:
            shown = ", ".join(repr(b) for b in sorted(unknown)[:5])
            raise BadInputError(f"column {column.name!r}: unknown categor{'y' if len(unknown) == 1 else 'ies'} {shown}")
    return out


def encode_columns(
    columns: Sequence[pb.ColumnSpec],
    values: Mapping[str, Any],
    missing: Mapping[str, Any] | None = None,
    *,
    rows: int | None = None,
) -> np.ndarray:
    """The float32 batch for `columns` (the manifest's io.columns) from named column values (see
    ColumnCodec.encode; a caller encoding many batches keeps a ColumnCodec)."""
    return ColumnCodec(columns).encode(values, missing, rows=rows)


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


def recoder(
    source: Sequence[pb.ColumnSpec], target: Sequence[pb.ColumnSpec]
) -> Callable[[np.ndarray], np.ndarray] | None:
    """A function taking rows encoded for `source`'s columns to rows encoded for `target`'s (columns by
    name; a string category to its code among the target's categories, or the target's unknown code), for
    running one model's input through another (the shadowed previous model). Identity where either
    manifest names no columns (older manifests: same float matrix) or both name the same; None when the
    target needs a column the source lacks."""
    if not len(source) or not len(target) or list(source) == list(target):
        return lambda rows: rows
    position = {c.name: j for j, c in enumerate(source)}
    if any(c.name not in position for c in target):
        return None
    order = np.array([position[c.name] for c in target], dtype=np.int64)
    tables: dict[int, np.ndarray] = {}
    for k, c in enumerate(target):
        s = source[int(order[k])]
        if c.dtype == STRING and list(s.categories) != list(c.categories):
            index = {cat: i for i, cat in enumerate(c.categories)}
            unknown = len(c.categories)
            tables[k] = np.array([index.get(cat, unknown) for cat in s.categories] + [unknown], dtype=np.float32)

    def recode(rows: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(rows[:, order])
        for k, table in tables.items():
            v = out[:, k]
            known = ~np.isnan(v)
            codes = np.clip(np.round(v[known]), 0, len(table) - 1).astype(np.int64)
            v[known] = table[codes]
        return out

    return recode
