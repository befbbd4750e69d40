"""SQL helpers shared by every part of the cloud: fetch-or-raise, insert-or-ignore, and which database
errors mean "run the transaction again"."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import ARRAY, JSON, Column, ColumnElement, Dialect, Table, any_, bindparam
from sqlalchemy.dialects import sqlite
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


def among(session: Session, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """`column IN values` for a query on session's database. On PostgreSQL `column = ANY(one array)`: an IN
    list is a parameter per value in a text as long, which psycopg parses afresh in Python whenever it is
    over 50 parameters (a batch's 500 device ids: reading a batch's device rows, targets and credentials
    cost ingestion more in that parsing than in the queries); one array keeps the text short and the same."""
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(values)  # type: ignore[no-any-return]


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
    # in key order: two transactions inserting overlapping keys wait on each other in one order, never a cycle
    ordered = sorted(rows, key=lambda row: tuple((row.get(c) is None, row.get(c)) for c in unique_columns))
    if dialect == "postgresql":
        return _insert_ignore_unnest(session, table, ordered, unique_columns)
    if dialect != "sqlite":
        raise ConfigurationError(f"insert_ignore does not support the {dialect} dialect")
    statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(unique_columns))
    # counted by the driver's rowcount (a skipped row counts 0): sqlite3's executemany, one statement
    result = session.execute(statement, ordered, execution_options={"preserve_rowcount": True})
    return max(0, result.rowcount)  # type: ignore[attr-defined]


def _insert_ignore_unnest(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], unique_columns: Sequence[str]
) -> int:
    """PostgreSQL: every row in one INSERT ... SELECT FROM unnest(one array per column), whatever the count.
    SQLAlchemy sends many rows as INSERT ... VALUES (...), (...) whose text grows with the rows, and psycopg
    parses each such text afresh in Python: half of the ingest thread's CPU in a 1,000-device rollout
    (~50 us per event row against ~6 here; the driver's executemany ~20). Values go through each column's
    own bind conversion and the Python-side defaults of columns a row leaves out are applied, as
    SQLAlchemy's INSERT would."""
    dialect = session.get_bind().dialect
    given = set().union(*(row.keys() for row in rows))
    columns = [c for c in table.columns if c.name in given or _python_default(c) is not None]
    quote = dialect.identifier_preparer.quote
    arrays = []
    for column in columns:
        default = _python_default(column)
        values = [row[column.name] if column.name in row else (default() if default else None) for row in rows]
        arrays.append(_bind_values(column, values, dialect))
    casts = ", ".join(f"CAST(%s AS {column.type.compile(dialect=dialect)}[])" for column in columns)
    sql = (
        f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({', '.join(quote(c.name) for c in columns)})"
        f" SELECT * FROM unnest({casts}) ON CONFLICT ({', '.join(quote(c) for c in unique_columns)}) DO NOTHING"
    )
    result = session.connection().exec_driver_sql(sql, tuple(arrays))
    return max(0, result.rowcount)


def _bind_values(column: Column[Any], values: list[Any], dialect: Dialect) -> list[Any]:
    """values as the driver takes them inside an array: JSON as its text (psycopg adapts a dict only as a
    single parameter), anything else through the column type's own bind conversion."""
    if isinstance(column.type, JSON):
        null = None if column.type.none_as_null else "null"
        return [null if value is None else json.dumps(value) for value in values]
    convert = column.type.bind_processor(dialect)
    return [convert(value) for value in values] if convert is not None else values


def _python_default(column: Column[Any]) -> Callable[[], Any] | None:
    """A column's Python-side INSERT default as a function of nothing (None: it has none)."""
    default = column.default
    if default is None or column.server_default is not None:
        return None
    if default.is_scalar:
        value = default.arg  # type: ignore[attr-defined]
        return lambda: value
    if default.is_callable:
        make = default.arg  # type: ignore[attr-defined]  # SQLAlchemy wraps it to take an execution context
        return lambda: make(None)
    return None


# PostgreSQL aborts one of two transactions that wait on each other (deadlock) or that cannot be serialised;
# the aborted one is safe to run again from the start.
_RETRYABLE_SQLSTATES = {"40P01", "40001"}


def is_retryable_conflict(exc: BaseException) -> bool:
    """True for a deadlock or serialisation failure: roll back and run the transaction again."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in _RETRYABLE_SQLSTATES
