"""Additive schema sync: columns a newer EdgeFleet added to an existing table are added to the database.

`create_all` creates missing tables but never touches existing ones, so a database made by an older
version would fail on the first query naming a new column. Before 1.0 every schema change is additive
(new tables, new columns with a default or NULL), so on start the cloud compares each table with the
database and issues `ALTER TABLE ... ADD COLUMN` for what is missing, with the column's default as the
server default so existing rows read back as new ones would be written. Anything else (a dropped or
retyped column) is refused with a clear error rather than guessed at; that is when real migrations
(Alembic) take over.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Column, Engine, MetaData, inspect, text
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from cloud.errors import ConfigurationError


def add_missing_columns(engine: Engine, metadata: MetaData, schema: str | None = None) -> list[str]:
    """Add every column of metadata's tables that the database lacks; returns "table.column" added."""
    added = []
    with engine.begin() as conn:  # one connection: on SQLite a second one would wait for this one's lock
        inspector = inspect(conn)
        existing_tables = set(inspector.get_table_names(schema=schema))
        for table in metadata.sorted_tables:
            if table.name not in existing_tables:
                continue  # create_all makes it whole
            present = {c["name"] for c in inspector.get_columns(table.name, schema=schema)}
            for column in table.columns:
                if column.name in present:
                    continue
                ddl_type = column.type.compile(dialect=engine.dialect)
                default = _server_default(column, engine.dialect.name)
                if default is None and not column.nullable:
                    raise ConfigurationError(
                        f"the database's table {table.name} lacks column {column.name}, which has no default "
                        f"to fill existing rows with: migrate it by hand")  # fmt: skip
                qualified = f'"{schema}"."{table.name}"' if schema else f'"{table.name}"'
                clause = f" DEFAULT {default}" if default is not None else ""
                null = "" if column.nullable else " NOT NULL"
                conn.execute(text(f'ALTER TABLE {qualified} ADD COLUMN "{column.name}" {ddl_type}{clause}{null}'))
                added.append(f"{table.name}.{column.name}")
    return added


def _server_default(column: Column[Any], dialect: str) -> str | None:
    """The column's Python default as an SQL literal, or None when it has none that can be written so."""
    default = column.default
    if default is None:
        return None
    if isinstance(default, ScalarElementColumnDefault):
        value = default.arg
    elif getattr(default, "is_callable", False):
        factory: Any = getattr(default, "arg")  # noqa: B009  (SQLAlchemy wraps it to take a context)
        try:
            value = factory(None)  # e.g. dict, list, now_ms
        except TypeError:
            value = factory()
    else:
        return None
    if isinstance(value, bool):
        return ("TRUE" if value else "FALSE") if dialect == "postgresql" else str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dict | list):
        return "'" + json.dumps(value).replace("'", "''") + "'"
    return None
