"""Registry aliases and their append-only history."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from cloud.errors import InvalidRequestError, NotFoundError
from cloud.registry import aliases


def test_moves_are_recorded_with_who_when_why_and_from_where(any_engine: Engine, register) -> None:
    clock = iter(range(1_000, 2_000, 100))
    with Session(any_engine) as session:
        v1, v2 = register(session, "m").version, register(session, "m").version
        first = aliases.move(session, "m", "champion", v1, actor="system", reason="first", clock=lambda: next(clock))
        assert first is not None and first.from_version is None
        assert aliases.move(session, "m", "champion", v1, actor="ana", reason="again") is None  # no-op
        aliases.move(session, "m", "challenger", v2, actor="retrain", reason="won", clock=lambda: next(clock))
        aliases.move(session, "m", "champion", v2, actor="ana", reason="promoted", clock=lambda: next(clock))
        session.commit()
        assert aliases.current(session, "m") == {"champion": v2, "challenger": v2}
        assert aliases.resolve(session, "m", "champion") == v2
        moves = [(m.alias, m.from_version, m.to_version, m.actor, m.reason) for m in aliases.history(session, "m")]
        assert moves == [("champion", None, v1, "system", "first"), ("challenger", None, v2, "retrain", "won"),
                         ("champion", v1, v2, "ana", "promoted")]
        assert len(aliases.history(session, "m", "champion")) == 2


def test_bad_moves_are_refused_and_change_nothing(any_engine: Engine, register) -> None:
    with Session(any_engine) as session:
        v1 = register(session, "m").version
        with pytest.raises(InvalidRequestError, match="unknown alias"):
            aliases.move(session, "m", "latest", v1, actor="ana")
        with pytest.raises(InvalidRequestError, match="actor"):
            aliases.move(session, "m", "champion", v1, actor="")
        with pytest.raises(NotFoundError):
            aliases.move(session, "m", "champion", "99", actor="ana")
        with pytest.raises(NotFoundError, match="no production"):
            aliases.resolve(session, "m", "production")
        assert aliases.history(session, "m") == []
