"""Versioned data from the fleet: sampled inputs joined to their labels become content-addressed datasets.

A snapshot takes a model's sampled predictions that have a label (a late label from the feedback path wins
over the one the device knew when it predicted, as in `cloud.monitoring.feedback`), writes them in one
canonical byte form (rows in (device, prediction id) order, float32 inputs, JSON lines), and names the
dataset by the sha256 of those bytes. The bytes go into the artifact store under that same digest and the
dataset's record keeps its provenance: devices, time window, model versions, label sources. The same rows
always give the same hash, whoever takes the snapshot and whenever: a run that names a hash names its data.

A model with string columns samples their category codes (what its artifact reads: category i as i, an
unknown one as len(categories), missing as NaN). Its rows keep both: `input`, the codes, which the champion
and challenger artifacts are run on, and `values`, the codes decoded by the sampled version's manifest
columns (the category string, None for missing, UNKNOWN for a category the model did not know: the device
kept no string), which is what the reference data holds and what a retrain on a DataFrame must add to it.
Rows of purely numeric models carry no `values`, and their bytes are those of before.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sqlalchemy import and_
from sqlmodel import Session, col, select

from cloud.db.tables import Dataset, DatasetCreate, FeedbackRecord, SampleRecord
from cloud.errors import InvalidRequestError
from cloud.registry.artifacts import ArtifactStore
from cloud.registry.datasets import get_dataset, register_dataset
from cloud.registry.versions import list_model_versions, manifest_of
from protocols.v1 import messages_pb2 as pb

FORMAT = "edgefleet.field-dataset.v1"
FIELD = "field"
UNKNOWN = "(unknown category)"  # a sampled string code len(categories): the model did not know the string


@dataclass(frozen=True)
class FieldRow:
    device_id: str
    prediction_id: str
    model_version: str
    ts_ms: int
    prediction: str
    label: str
    label_source: str  # device (known when it predicted) | api | mqtt (came back later)
    input: tuple[float, ...]
    values: tuple[float | str | None, ...] = ()  # `input` decoded by the manifest's columns (string columns)


@dataclass(frozen=True)
class FieldDataset:
    content_hash: str
    model_id: str
    rows: tuple[FieldRow, ...]
    columns: tuple[str, ...] = ()  # the input columns' names, where the rows carry decoded values

    def frame(self) -> Any:
        """The decoded rows as a pandas DataFrame named by the manifest's columns (strings stay strings)."""
        import pandas as pd

        if not self.columns:
            raise InvalidRequestError("this field dataset holds no decoded columns (a purely numeric model)")
        return pd.DataFrame([list(r.values) for r in self.rows], columns=list(self.columns))

    @property
    def X(self) -> np.ndarray:
        return np.asarray([r.input for r in self.rows], dtype=np.float32)

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.rows]


@dataclass(frozen=True)
class Selection:
    """Which labelled samples a snapshot takes; None means no bound."""

    model_id: str
    versions: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None  # exclusive


def collect(session: Session, selection: Selection) -> list[FieldRow]:
    """The selected samples that have a label, in canonical order."""
    query = (
        select(SampleRecord, FeedbackRecord.label, FeedbackRecord.source)
        .join(FeedbackRecord, and_(col(FeedbackRecord.device_id) == col(SampleRecord.device_id),
                                   col(FeedbackRecord.prediction_id) == col(SampleRecord.prediction_id)),
              isouter=True)
        .where(SampleRecord.model_id == selection.model_id)
    )  # fmt: skip
    if selection.versions:
        query = query.where(col(SampleRecord.model_version).in_(selection.versions))
    if selection.devices:
        query = query.where(col(SampleRecord.device_id).in_(selection.devices))
    if selection.since_ms is not None:
        query = query.where(SampleRecord.ts_ms >= selection.since_ms)
    if selection.until_ms is not None:
        query = query.where(SampleRecord.ts_ms < selection.until_ms)
    widths = _widths(session, selection.model_id)
    specs = _string_columns(session, selection.model_id)
    rows = {}
    for sample, late, source in session.exec(query):
        label, label_source = (late, source) if late is not None else (sample.label, "device")
        if label is None or label == "" or not sample.input:
            continue
        width = widths.get(sample.model_version, widths.get(None))
        if width and len(sample.input) != width:
            # a device's sample of another width (a lie, or a bug) would make canonical_bytes refuse the whole
            # snapshot, every device's rows with it: it is left out instead (tests/attacks)
            continue
        row = FieldRow(sample.device_id, sample.prediction_id, sample.model_version, sample.ts_ms, sample.prediction,
                       label, label_source, tuple(float(np.float32(v)) for v in sample.input))  # fmt: skip
        columns = specs.get(sample.model_version, specs.get(None))
        if columns:
            row = replace(row, values=decode(row.input, columns))
        rows[(row.device_id, row.prediction_id)] = row  # a sample stored twice counts once
    return [rows[key] for key in sorted(rows)]


def _widths(session: Session, model_id: str) -> dict[str | None, int]:
    """n_features of each registered version of the model (0: not said), and under None the latest's, for
    samples naming a version the registry does not know."""
    out: dict[str | None, int] = {}
    for mv in list_model_versions(session, model_id):  # newest first
        out[mv.version] = int(manifest_of(mv).io.n_features)
        out.setdefault(None, out[mv.version])
    return out


def _string_columns(session: Session, model_id: str) -> dict[str | None, list[pb.ColumnSpec]]:
    """The input columns of each registered version that has string columns (None: the latest's)."""
    out: dict[str | None, list[pb.ColumnSpec]] = {}
    for mv in list_model_versions(session, model_id):  # newest first
        columns = list(manifest_of(mv).io.columns)
        if any(c.dtype == "string" for c in columns):
            out[mv.version] = columns
            out.setdefault(None, columns)
    return out


def decode(codes: Sequence[float], columns: Sequence[pb.ColumnSpec]) -> tuple[float | str | None, ...]:
    """A sampled input as its columns' values: a string column's code as its category (None when missing,
    UNKNOWN for len(categories) or any other code the manifest does not name); numbers as they are."""
    out: list[float | str | None] = []
    for v, c in zip(codes, columns, strict=True):
        if c.dtype != "string":
            out.append(float(v))
        elif v != v:
            out.append(None)
        else:
            i = int(v)
            out.append(c.categories[i] if i == v and 0 <= i < len(c.categories) else UNKNOWN)
    return tuple(out)


def column_names(session: Session, model_id: str) -> tuple[str, ...]:
    """The latest version's input column names where its rows are decoded (string columns), else ()."""
    latest = _string_columns(session, model_id).get(None)
    return tuple(c.name for c in latest) if latest else ()


def canonical_bytes(model_id: str, rows: Sequence[FieldRow], columns: Sequence[str] = ()) -> bytes:
    """One header line, then one JSON line per row, in (device, prediction id) order."""
    ordered = sorted(rows, key=lambda r: (r.device_id, r.prediction_id))
    widths = {len(r.input) for r in ordered}
    if len(widths) > 1:
        raise InvalidRequestError(f"the rows have different numbers of features: {sorted(widths)}")
    n_features = widths.pop() if widths else 0
    header: dict[str, Any] = {"format": FORMAT, "model_id": model_id, "n_features": n_features, "n_rows": len(ordered)}
    if columns:
        header["columns"] = list(columns)
    lines = [json.dumps(header, sort_keys=True, separators=(",", ":"))]
    for r in ordered:
        values = [r.device_id, r.prediction_id, r.model_version, r.ts_ms, r.prediction, r.label, r.label_source,
                  [float(np.float32(v)) for v in r.input]]  # fmt: skip
        if r.values:
            values.append(list(r.values))
        lines.append(json.dumps(values, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode()


def parse(data: bytes) -> FieldDataset:
    """The dataset these canonical bytes hold; InvalidRequestError for bytes that are not one."""
    try:
        head, *body = data.decode().splitlines()
        header = json.loads(head)
        if header.get("format") != FORMAT:
            raise ValueError(f"format {header.get('format')!r}")
        rows = tuple(FieldRow(d, p, v, int(t), pred, lab, src, tuple(float(x) for x in inp),
                              tuple(decoded[0]) if decoded else ())
                     for d, p, v, t, pred, lab, src, inp, *decoded in map(json.loads, body))  # fmt: skip
        columns = tuple(str(c) for c in header.get("columns", ()))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"not a field dataset ({FORMAT}): {exc}") from None
    return FieldDataset(hashlib.sha256(data).hexdigest(), str(header["model_id"]), rows, columns)


def provenance(selection: Selection, rows: Sequence[FieldRow], **extra: object) -> dict[str, object]:
    stamps = [r.ts_ms for r in rows]
    return {
        "model_id": selection.model_id,
        "devices": sorted({r.device_id for r in rows}),
        "model_versions": sorted({r.model_version for r in rows}),
        "window_ms": [min(stamps), max(stamps)] if stamps else [],
        "label_sources": dict(sorted(Counter(r.label_source for r in rows).items())),
        "selection": {
            "versions": list(selection.versions),
            "devices": list(selection.devices),
            "since_ms": selection.since_ms,
            "until_ms": selection.until_ms,
        },  # fmt: skip
        **extra,
    }


def store_rows(
    session: Session, store: ArtifactStore, model_id: str, rows: Sequence[FieldRow], *, name: str,
    origin: dict[str, object], columns: Sequence[str] = (),
) -> Dataset:  # fmt: skip
    """Write rows as a dataset version (bytes in the store, record in the registry); the same rows give
    the same version, and registering it again changes nothing."""
    if not rows:
        raise InvalidRequestError(f"no labelled samples of {model_id} match: nothing to snapshot")
    data = canonical_bytes(model_id, rows, columns if any(r.values for r in rows) else ())
    digest = store.put(data)
    return register_dataset(session, DatasetCreate(
        content_hash=digest, name=name, n_rows=len(rows), n_features=len(rows[0].input), kind=FIELD,
        provenance=origin,
    ))  # fmt: skip


def snapshot(session: Session, store: ArtifactStore, selection: Selection, *, name: str | None = None) -> Dataset:
    """Take the selected labelled samples as a dataset version; InvalidRequestError when there are none."""
    rows = collect(session, selection)
    return store_rows(session, store, selection.model_id, rows, name=name or f"{selection.model_id}-field",
                      origin=provenance(selection, rows),
                      columns=column_names(session, selection.model_id))  # fmt: skip


def load(session: Session, store: ArtifactStore, content_hash: str) -> FieldDataset:
    """A field dataset version by hash, its bytes checked against the hash (NotFoundError if unknown)."""
    record = get_dataset(session, content_hash)
    if record.kind != FIELD:
        raise InvalidRequestError(f"dataset {content_hash[:12]} is a {record.kind} dataset, not one from the field")
    return parse(store.get(content_hash))


def split(rows: Sequence[FieldRow], eval_share: float) -> tuple[list[FieldRow], list[FieldRow]]:
    """(train, eval): each row's side is fixed by a hash of its input's float32 bytes, so a row never changes
    side as the data grows, the split needs no seed, and an input seen again (on another device, or the
    same one later) lands on the side it landed on before: the eval part holds no input trained on."""
    if not 0 < eval_share < 1:
        raise InvalidRequestError(f"eval_share must be between 0 and 1, got {eval_share}")
    train: list[FieldRow] = []
    held: list[FieldRow] = []
    for r in rows:
        key = hashlib.sha256(np.asarray(r.input, dtype=np.float32).tobytes()).digest()
        (held if int.from_bytes(key[:8], "big") / 2**64 < eval_share else train).append(r)
    return train, held
