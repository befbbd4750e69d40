"""Datasets in the ML metadata store, recorded by content hash (registering the same bytes twice is a no-op)."""

from __future__ import annotations

import hashlib

from sqlmodel import Session, col, select

from cloud.db import fetch_or_raise, insert_ignore
from cloud.db.tables import Dataset, DatasetCreate


def content_hash(*parts: bytes) -> str:
    """sha256 over length-prefixed parts (e.g. X.tobytes(), y.tobytes()), so (ab, c) != (a, bc)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def register_dataset(session: Session, dataset: DatasetCreate) -> Dataset:
    """Record a dataset by content hash; registering the same content again returns the first record."""
    insert_ignore(session, Dataset, [dataset.model_dump()], ["content_hash"])
    return get_dataset(session, dataset.content_hash)


def get_dataset(session: Session, content_hash: str) -> Dataset:
    return fetch_or_raise(session, Dataset, content_hash, missing=f"no dataset {content_hash}")


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.exec(select(Dataset).order_by(col(Dataset.created_at_ms).desc())))
