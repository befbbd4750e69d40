"""among(session, column, values) selects what `column IN values` would, on SQLite and, with
EDGEFLEET_TEST_DATABASE_URL, on PostgreSQL (where it is `column = ANY(array)`, one parameter)."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from cloud.db import among, insert_ignore
from cloud.db.tables import Device


def test_selects_the_rows_named_and_nothing_for_no_values(any_engine: Engine) -> None:
    ids = [f"dev-{n:04d}" for n in range(600)] + ["o'brien", "dev.with.dots"]
    with Session(any_engine) as session:
        insert_ignore(session, Device, [{"id": d, "registered_at_ms": 1} for d in ids], ["id"])
        session.commit()
        wanted = ids[::7] + ["o'brien", "not-there"]
        found = session.exec(select(Device.id).where(among(session, col(Device.id), wanted))).all()
        assert sorted(found) == sorted(set(wanted) - {"not-there"})
        assert session.exec(select(Device.id).where(among(session, col(Device.id), []))).all() == []
        assert len(session.exec(select(Device.id).where(among(session, col(Device.id), iter(ids[:500])))).all()) == 500
