"""Versioned data from the fleet: sampled inputs joined to their labels become content-addressed datasets.

A snapshot takes a model's sampled predictions that have a label (a late label from the feedback path wins
over the one the device knew when it predicted, as in `cloud.monitoring.feedback`), writes them in one
canonical byte form (rows in (device, prediction id) order, float32 inputs, JSON lines), and names the
dataset by the sha256 of those bytes. The bytes go into the artifact store under that same digest and the
dataset's record keeps its provenance: devices, time window, model versions, label sources. The same rows
always give the same hash, whoever takes the snapshot and whenever: a run that names a hash names its data.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import and_
from sqlmodel import Session, col, select

from cloud.db.tables import Dataset, DatasetCreate, FeedbackRecord, SampleRecord
from cloud.errors import InvalidRequestError
from cloud.registry.artifacts import ArtifactStore
from cloud.registry.datasets import get_dataset, register_dataset
from cloud.registry.versions import list_model_versions, manifest_of

FORMAT = "edgefleet.field-dataset.v1"
FIELD = "field"


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


@dataclass(frozen=True)
class FieldDataset:
    content_hash: str
    model_id: str
    rows: tuple[FieldRow, ...]

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


def canonical_bytes(model_id: str, rows: Sequence[FieldRow]) -> bytes:
    """One header line, then one JSON line per row, in (device, prediction id) order."""
    ordered = sorted(rows, key=lambda r: (r.device_id, r.prediction_id))
    widths = {len(r.input) for r in ordered}
    if len(widths) > 1:
        raise InvalidRequestError(f"the rows have different numbers of features: {sorted(widths)}")
    n_features = widths.pop() if widths else 0
    header = {"format": FORMAT, "model_id": model_id, "n_features": n_features, "n_rows": len(ordered)}
    lines = [json.dumps(header, sort_keys=True, separators=(",", ":"))]
    for r in ordered:
        values = [r.device_id, r.prediction_id, r.model_version, r.ts_ms, r.prediction, r.label, r.label_source,
                  [float(np.float32(v)) for v in r.input]]  # fmt: skip
        lines.append(json.dumps(values, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode()


def parse(data: bytes) -> FieldDataset:
    """The dataset these canonical bytes hold; InvalidRequestError for bytes that are not one."""
    try:
        head, *body = data.decode().splitlines()
        header = json.loads(head)
        if header.get("format") != FORMAT:
            raise ValueError(f"format {header.get('format')!r}")
        rows = tuple(FieldRow(d, p, v, int(t), pred, lab, src, tuple(float(x) for x in inp))
                     for d, p, v, t, pred, lab, src, inp in map(json.loads, body))  # fmt: skip
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"not a field dataset ({FORMAT}): {exc}") from None
    return FieldDataset(hashlib.sha256(data).hexdigest(), str(header["model_id"]), rows)


def provenance(selection: Selection, rows: Sequence[FieldRow], **extra: object) -> dict[str, object]:
    stamps = [r.ts_ms for r in rows]
    return {
        "model_id": selection.model_id,
        "devices": sorted({r.device_id for r in rows}),
        "model_versions": sorted({r.model_version for r in rows}),
        "window_ms": [min(stamps), max(stamps)] if stamps else [],
        "label_sources": dict(sorted(Counter(r.label_source for r in rows).items())),
        "selection": {"versions": list(selection.versions), "devices": list(selection.devices),
                      "since_ms": selection.since_ms, "until_ms": selection.until_ms},  # fmt: skip
        **extra,
    }


def store_rows(
    session: Session, store: ArtifactStore, model_id: str, rows: Sequence[FieldRow], *, name: str,
    origin: dict[str, object],
) -> Dataset:  # fmt: skip
    """Write rows as a dataset version (bytes in the store, record in the registry); the same rows give
    the same version, and registering it again changes nothing."""
    if not rows:
        raise InvalidRequestError(f"no labelled samples of {model_id} match: nothing to snapshot")
    data = canonical_bytes(model_id, rows)
    digest = store.put(data)
    return register_dataset(session, DatasetCreate(
        content_hash=digest, name=name, n_rows=len(rows), n_features=len(rows[0].input), kind=FIELD,
        provenance=origin,
    ))  # fmt: skip


def snapshot(session: Session, store: ArtifactStore, selection: Selection, *, name: str | None = None) -> Dataset:
    """Take the selected labelled samples as a dataset version; InvalidRequestError when there are none."""
    rows = collect(session, selection)
    return store_rows(session, store, selection.model_id, rows, name=name or f"{selection.model_id}-field",
                      origin=provenance(selection, rows))  # fmt: skip


def load(session: Session, store: ArtifactStore, content_hash: str) -> FieldDataset:
    """A field dataset version by hash, its bytes checked against the hash (NotFoundError if unknown)."""
    record = get_dataset(session, content_hash)
    if record.kind != FIELD:
        raise InvalidRequestError(f"dataset {content_hash[:12]} is a {record.kind} dataset, not one from the field")
    return parse(store.get(content_hash))


def split(rows: Sequence[FieldRow], eval_share: float) -> tuple[list[FieldRow], list[FieldRow]]:
    """(train, eval): each row's side is fixed by a hash of its (device, prediction id), so a row never
    changes side as the data grows and the split needs no seed."""
    if not 0 < eval_share < 1:
        raise InvalidRequestError(f"eval_share must be between 0 and 1, got {eval_share}")
    train: list[FieldRow] = []
    held: list[FieldRow] = []
    for r in rows:
        key = hashlib.sha256(f"{r.device_id}\x00{r.prediction_id}".encode()).digest()
        (held if int.from_bytes(key[:8], "big") / 2**64 < eval_share else train).append(r)
    return train, held
