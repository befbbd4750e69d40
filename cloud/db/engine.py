"""Engines for SQLite and PostgreSQL, table creation, schema clean-up and the commit-or-roll-back session.

One code path serves both dialects. SQLite gets WAL and a busy timeout so the ingestion worker and the API
threads can share a file; a `read_only` engine's transactions on SQLite begin deferred, so readers run
side by side under WAL instead of queueing for the write lock. PostgreSQL is reached through psycopg 3
(`postgresql+psycopg://`; plain `postgresql://` URLs are rewritten). An optional schema puts every table
in its own PostgreSQL namespace: tests use it to isolate runs, an operator can use it to host several
fleets in one database.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel, create_engine

from cloud.db.write_turns import WriteTurns, WriteTurnTimeout
from cloud.errors import ConfigurationError

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_ENGINE_SCHEMAS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
_READ_ONLY = "edgefleet_read_only"
_HAS_TURN = "edgefleet_write_turn"  # in a connection's info while its transaction holds the write turn
BUSY_TIMEOUT_S = 30.0  # how long a SQLite writer waits for the write lock (its turn, then the file lock)

# The pool fits the threads that use it: the API runs sync routes and dependencies on anyio's default
# thread limiter (40 at once, one session each), plus the ingestor, chunk server, refresher and republisher.
# Past that a request waits POOL_TIMEOUT_S for a connection and then fails (503), rather than hanging for
# SQLAlchemy's default 30 s while its client gives up.
API_THREADS = 40
POOL_SIZE = 10  # kept open between bursts
MAX_OVERFLOW = API_THREADS  # opened for a burst, closed when returned
POOL_TIMEOUT_S = 5.0
_POOL = {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW, "pool_timeout": POOL_TIMEOUT_S}


def normalise_database_url(url: str) -> str:
    """Rewrite driverless PostgreSQL URLs to psycopg 3, the driver EdgeFleet installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if not url.startswith(("sqlite:", "postgresql+psycopg://")):
        raise ConfigurationError(f"unsupported database URL {url.split('://')[0]}://...: use sqlite:/// or postgresql://")
    return url


def make_engine(url: str, *, schema: str | None = None, echo: bool = False) -> Engine:
    url = normalise_database_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url, echo=echo)
    connect_args: dict[str, Any] = {}
    if schema is not None:
        if not _SCHEMA_NAME.match(schema):
            raise ConfigurationError(f"invalid schema name {schema!r}")
        connect_args["options"] = f"-csearch_path={schema}"
    engine = create_engine(url, echo=echo, pool_pre_ping=True, connect_args=connect_args, **_POOL)
    if schema is not None:
        _ENGINE_SCHEMAS[engine] = schema
    return engine


def _sqlite_engine(url: str, *, echo: bool) -> Engine:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # the ingestion worker and API threads share the engine, so connections cross threads
    connect_args = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}
    engine = create_engine(url, echo=echo, connect_args=connect_args, **_POOL)
    turns = WriteTurns()  # this process's writers take the lock in the order they asked (cloud.db.write_turns)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # take transaction control from pysqlite, whose implicit BEGIN breaks SAVEPOINTs (SQLAlchemy docs)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # IMMEDIATE: take the write lock up front, so two writers queue (in this process on its write
        # turns, between processes on busy_timeout) instead of one failing with SQLITE_BUSY when its read
        # transaction tries to become a write transaction. The price: every transaction, reads included,
        # holds the lock until it ends, so keep sessions short and never open a second session inside a
        # first one on the same thread (it would wait BUSY_TIMEOUT_S for a turn, then fail).
        # Read-only sessions (read_only below) begin deferred: a WAL reader takes no lock and waits for none.
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN")
            return
        try:
            turns.acquire(BUSY_TIMEOUT_S)
        except WriteTurnTimeout as exc:  # what SQLite says after its busy timeout, so callers see one error
            locked = sqlite3.OperationalError(f"database is locked ({exc})")
            raise OperationalError("BEGIN IMMEDIATE", None, locked) from None
        conn.info[_HAS_TURN] = True
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _end_turn(conn.info)
            raise

    def _end_turn(info: dict[str, Any]) -> None:
        if info.pop(_HAS_TURN, False):
            turns.release()

    # the turn ends as the transaction does (just before its COMMIT or ROLLBACK runs: the next writer's
    # BEGIN IMMEDIATE waits the moment that takes in the busy handler); a connection returned to the pool
    # mid-transaction, or invalidated, gives it back too, so a lost turn cannot stop the process's writes
    event.listen(engine, "commit", lambda conn: _end_turn(conn.info))
    event.listen(engine, "rollback", lambda conn: _end_turn(conn.info))
    event.listen(engine.pool, "checkin", lambda _dbapi, record: _end_turn(record.info))
    event.listen(engine.pool, "invalidate", lambda _dbapi, record, _exc: _end_turn(record.info))
    return engine


def read_only(engine: Engine) -> Engine:
    """The same engine (pool, events) for sessions that only read, e.g. the API's GETs. On SQLite their
    transactions begin deferred; a write in one would fail with SQLITE_BUSY when another writer got there
    first, so use it only where nothing is written. On PostgreSQL it changes nothing."""
    return engine.execution_options(**{_READ_ONLY: True})


def create_tables(engine: Engine) -> None:
    """Create the schema (PostgreSQL, if the engine has one) and every table, and add the columns a newer
    version added to existing tables (cloud.db.schema_sync); safe to call again."""
    import cloud.db.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
    import cloud.experiments.records  # noqa: F401
    import cloud.identity.records  # noqa: F401
    import cloud.rollout.records  # noqa: F401
    from cloud.db.schema_sync import add_missing_columns
    from cloud.errors import ConfigurationError

    schema = _ENGINE_SCHEMAS.get(engine)
    try:
        if schema and engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        SQLModel.metadata.create_all(engine)
        added = add_missing_columns(engine, SQLModel.metadata, schema if engine.dialect.name == "postgresql" else None)
        if added:
            logging.getLogger(__name__).info("added columns a newer version needs: %s", ", ".join(added))
    except OperationalError as exc:  # the first contact with the database: say which one and why, briefly
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        url = engine.url.render_as_string(hide_password=True)
        raise ConfigurationError(f"cannot use the database {url}: {reason}") from None


def drop_schema(engine: Engine) -> None:
    """Drop the engine's PostgreSQL schema with everything in it (test clean-up); other engines: drop tables."""
    schema = _ENGINE_SCHEMAS.get(engine)
    if schema and engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    else:
        SQLModel.metadata.drop_all(engine)
    engine.dispose()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    with Session(engine) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
