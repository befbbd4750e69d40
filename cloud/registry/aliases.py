"""Registry aliases: champion, challenger and production point at model versions; every move is kept.

`move` points an alias at a version and appends an `AliasMove` (who, when, why, from where) in the same
transaction, so the history is complete and never rewritten. Moving an alias to where it already points
records nothing.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from cloud.db import insert_ignore
from cloud.db.tables import AliasMove, ModelAlias
from cloud.errors import InvalidRequestError, NotFoundError
from cloud.registry.versions import get_model_version
from cloud.types import ClockMs, now_ms

CHAMPION = "champion"
CHALLENGER = "challenger"
PRODUCTION = "production"
ALIASES = (CHAMPION, CHALLENGER, PRODUCTION)


def _check(alias: str, actor: str) -> None:
    if alias not in ALIASES:
        raise InvalidRequestError(f"unknown alias {alias!r}; choose one of {', '.join(ALIASES)}")
    if not actor.strip():
        raise InvalidRequestError("an alias move needs an actor (who moved it)")


def move(
    session: Session, model_id: str, alias: str, version: str, *, actor: str, reason: str = "",
    clock: ClockMs = now_ms,
) -> AliasMove | None:  # fmt: skip
    """Point `alias` of `model_id` at `version` (which must exist); returns the recorded move, or None
    when it already pointed there."""
    _check(alias, actor)
    mv = get_model_version(session, model_id, version)
    current = session.get(ModelAlias, (model_id, alias), with_for_update=True)
    if current is None:
        # an alias's first move: of several at the same moment one creates the row (ON CONFLICT DO NOTHING
        # waits for the others' commit), the rest then queue on its row lock like any later move; a plain
        # INSERT made them fail with a unique violation (500)
        now = clock()
        row = {"model_id": model_id, "alias": alias, "version": mv.version, "updated_at_ms": now}
        if insert_ignore(session, ModelAlias, [row], ["model_id", "alias"]):
            record = AliasMove(model_id=model_id, alias=alias, from_version=None, to_version=mv.version,
                               actor=actor, reason=reason[:1000], ts_ms=now)  # fmt: skip
            session.add(record)
            session.flush()
            return record
        current = session.get(ModelAlias, (model_id, alias), with_for_update=True, populate_existing=True)
        assert current is not None
    if current.version == mv.version:
        return None
    now = clock()  # taken under the row's lock: the history's times follow its order
    record = AliasMove(model_id=model_id, alias=alias, from_version=current.version, to_version=mv.version,
                       actor=actor, reason=reason[:1000], ts_ms=now)  # fmt: skip
    current.version, current.updated_at_ms = mv.version, now
    session.add(current)
    session.add(record)
    session.flush()
    return record


def resolve(session: Session, model_id: str, alias: str) -> str:
    """The version `alias` points at; NotFoundError when it points nowhere yet."""
    current = session.get(ModelAlias, (model_id, alias))
    if current is None:
        raise NotFoundError(f"{model_id} has no {alias} yet")
    return current.version


def current(session: Session, model_id: str) -> dict[str, str]:
    rows = session.exec(select(ModelAlias).where(ModelAlias.model_id == model_id))
    return {row.alias: row.version for row in rows}


def history(session: Session, model_id: str, alias: str | None = None) -> list[AliasMove]:
    """Every move of the model's aliases (or of one alias), oldest first."""
    query = select(AliasMove).where(AliasMove.model_id == model_id)
    if alias is not None:
        query = query.where(AliasMove.alias == alias)
    return list(session.exec(query.order_by(col(AliasMove.ts_ms), col(AliasMove.id))))
