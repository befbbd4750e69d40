"""SQL helpers shared by every part of the cloud: fetch-or-raise, insert-or-ignore, and which database
errors mean "run the transaction again"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel
from sqlmodel.sql.expression import SelectOfScalar

from cloud.errors import ConfigurationError, NotFoundError

T = TypeVar("T")


def fetch_or_raise(session: Session, source: type[T] | SelectOfScalar[T], key: Any = None, *, missing: str) -> T:
    """The row of table `source` with primary key `key`, or the first row of query `source`; NotFoundError
    with the message `missing` when there is none. (The one place the cloud turns "no row" into a 404.)"""
    found = session.get(source, key) if isinstance(source, type) else session.exec(source).first()
    if found is None:
        raise NotFoundError(missing)
    return found


def insert_ignore(
    session: Session, model: type[SQLModel], rows: Sequence[dict[str, Any]], unique_columns: Sequence[str]
) -> int:
    """INSERT rows, skipping any whose unique key already exists; return how many were inserted.

    Idempotent ingestion rests on this: a message delivered twice (QoS 1 redelivery, a retained replay,
    two workers) lands once. Works on SQLite and PostgreSQL (both speak ON CONFLICT DO NOTHING).
    """
    if not rows:
        return 0
    table = model.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    pk = next(iter(table.primary_key.columns))
    statement: Any
    if dialect == "postgresql":
        statement = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(unique_columns))
    elif dialect == "sqlite":
        statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(unique_columns))
    else:
        raise ConfigurationError(f"insert_ignore does not support the {dialect} dialect")
    statement = statement.returning(pk)
    # in key order: two transactions inserting overlapping keys wait on each other in one order, never a cycle
    ordered = sorted(rows, key=lambda row: tuple((row.get(c) is None, row.get(c)) for c in unique_columns))
    inserted = session.execute(statement, ordered).all()
    return len(inserted)


# PostgreSQL aborts one of two transactions that wait on each other (deadlock) or that cannot be serialised;
# the aborted one is safe to run again from the start.
_RETRYABLE_SQLSTATES = {"40P01", "40001"}


def is_retryable_conflict(exc: BaseException) -> bool:
    """True for a deadlock or serialisation failure: roll back and run the transaction again."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in _RETRYABLE_SQLSTATES
