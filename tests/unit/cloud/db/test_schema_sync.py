"""A database made by an older version gains the columns a newer one added, existing rows reading back
as the defaults say; a new column with nothing to fill old rows with is a clear error."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, text
from sqlmodel import Session

from cloud.db import create_tables
from cloud.db.schema_sync import add_missing_columns
from cloud.db.tables import Device
from cloud.errors import ConfigurationError


def _drop(engine: Engine, table: str, column: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(f'ALTER TABLE "{table}" DROP COLUMN "{column}"'))


def test_an_older_database_gains_the_new_columns_with_their_defaults(any_engine: Engine) -> None:
    for column in ("labels", "online", "last_error_code", "facts", "spool_dropped", "capabilities"):  # JSON, bool, text
        _drop(any_engine, "device", column)
    _drop(any_engine, "device_credential", "labels")
    with any_engine.begin() as conn:  # a row the older version wrote
        conn.execute(text(
            "INSERT INTO device (id, agent_version, runtimes, update_state, desired_generation, "
            "reported_generation, reported_seq, reported_ts_ms, registered_at_ms) "
            "VALUES ('old-1', '', '[]', 'idle', 0, 0, 0, 0, 1)"
        ))
    create_tables(any_engine)  # what the cloud does on every start
    with Session(any_engine) as session:
        old = session.get(Device, "old-1")
        assert old is not None and (old.labels, old.online, old.last_error_code, old.facts) == ({}, False, None, {})
        assert old.spool_dropped == {} and old.capabilities == []  # an older agent: whole desired states
    create_tables(any_engine)  # and again: nothing left to add


def test_a_new_column_without_a_default_is_refused_not_guessed(any_engine: Engine) -> None:
    with any_engine.begin() as conn:
        conn.execute(text('CREATE TABLE "sync_probe" (id INTEGER PRIMARY KEY)'))
    newer = MetaData()
    Table("sync_probe", newer, Column("id", Integer, primary_key=True), Column("name", String(8), nullable=False))
    with pytest.raises(ConfigurationError, match="sync_probe lacks column name"):
        add_missing_columns(any_engine, newer, _schema(any_engine))
    Table("sync_probe", newer, Column("note", String(8), nullable=True), extend_existing=True)
    newer.tables["sync_probe"].c.name.nullable = True
    assert add_missing_columns(any_engine, newer, _schema(any_engine)) == ["sync_probe.name", "sync_probe.note"]


def _schema(engine: Engine) -> str | None:
    from cloud.db.engine import _ENGINE_SCHEMAS

    return _ENGINE_SCHEMAS.get(engine) if engine.dialect.name == "postgresql" else None
