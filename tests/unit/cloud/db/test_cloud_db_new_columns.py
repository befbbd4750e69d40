"""A database made before Device.facts existed gets the column on the next start (create_all adds tables only)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from cloud.db.engine import create_tables, make_engine


def test_an_existing_device_table_gains_the_facts_column(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    create_tables(engine)
    with engine.begin() as conn:
        conn.execute(text('ALTER TABLE "device" DROP COLUMN "facts"'))  # as a release before facts left it
    assert "facts" not in {c["name"] for c in inspect(engine).get_columns("device")}
    create_tables(engine)
    assert "facts" in {c["name"] for c in inspect(engine).get_columns("device")}
    create_tables(engine)  # and again: nothing to add
