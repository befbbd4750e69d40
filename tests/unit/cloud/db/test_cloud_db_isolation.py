"""The database_url fixture: an empty, private database for each test (SQLite, or a PostgreSQL schema)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from support.database import create_schema, drop_stale_schemas, new_schema_name, postgres_url_from_env

from cloud.db import make_engine


def _fresh_table_round_trip(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY, note TEXT)"))  # fails if shared
            assert conn.execute(text("SELECT count(*) FROM probe")).scalar_one() == 0
            conn.execute(text("INSERT INTO probe (id, note) VALUES (1, 'mine')"))
            return int(conn.execute(text("SELECT count(*) FROM probe")).scalar_one())
    finally:
        engine.dispose()


def test_database_url_gives_an_empty_private_database(database_url: str) -> None:
    assert _fresh_table_round_trip(database_url) == 1


def test_database_url_is_fresh_for_the_next_test_too(database_url: str) -> None:
    assert _fresh_table_round_trip(database_url) == 1


def test_the_url_is_sqlite_or_a_private_postgres_schema(database_url: str) -> None:
    if postgres_url_from_env() is None:
        assert database_url.startswith("sqlite:///")
    else:
        assert "search_path" in database_url


@pytest.mark.postgres
def test_postgres_url_uses_its_own_schema(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    finally:
        engine.dispose()
    assert schema is not None and schema.startswith("eftest_")


@pytest.mark.postgres
def test_stale_schemas_from_crashed_runs_are_dropped_and_fresh_ones_kept(postgres_url: str) -> None:
    base = postgres_url_from_env()
    assert base is not None
    stale, fresh = new_schema_name(now=1_000_000), new_schema_name()
    create_schema(base, stale)
    create_schema(base, fresh)
    try:
        dropped = drop_stale_schemas(base)
        assert stale in dropped and fresh not in dropped
    finally:
        from support.database import drop_schema

        drop_schema(base, fresh)
