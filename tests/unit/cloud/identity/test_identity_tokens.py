"""Operators' API tokens and the audit log (cloud.identity.tokens, cloud.identity.audit)."""

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from cloud.errors import InvalidRequestError, NotFoundError
from cloud.identity import audit
from cloud.identity.tokens import Role, authenticate, create_token, list_tokens, revoke_token
from cloud.types import now_ms


def test_roles_are_ordered() -> None:
    assert Role.ADMIN.allows(Role.DEPLOYER) and Role.DEPLOYER.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.DEPLOYER) and not Role.DEPLOYER.allows(Role.ADMIN)


def test_a_token_authenticates_as_its_operator_and_only_its_hash_is_kept(any_engine: Engine) -> None:
    with Session(any_engine) as session:
        row, text = create_token(session, name="ci", role="deployer")
        session.commit()
        assert text.startswith(f"ef_{row.id}_") and text.split("_", 2)[2] not in row.secret_sha256
        operator = authenticate(session, text)
        assert operator is not None and (operator.name, operator.role) == ("ci", Role.DEPLOYER)
        assert operator.actor == f"token {row.id} (ci)"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + "x",
        lambda t: t[:-1],
        lambda t: "ef_nope_" + t.split("_", 2)[2],
        lambda t: t.replace("ef_", "xx_"),
        lambda t: "",
        lambda t: "ef_",
        lambda t: "ef__",
    ],
)
def test_wrong_or_malformed_tokens_authenticate_nobody(any_engine: Engine, mangle) -> None:  # type: ignore[no-untyped-def]
    with Session(any_engine) as session:
        _row, text = create_token(session, name="ci", role="admin")
        session.commit()
        assert authenticate(session, mangle(text)) is None


def test_revoked_and_expired_tokens_stop_working(any_engine: Engine) -> None:
    with Session(any_engine) as session:
        row, text = create_token(session, name="old", role="admin")
        _short, short_text = create_token(session, name="short", role="viewer", ttl_days=1)
        session.commit()
        revoke_token(session, row.id)
        session.commit()
        assert authenticate(session, text) is None
        assert authenticate(session, short_text) is not None
        assert authenticate(session, short_text, now=now_ms() + 2 * 86_400_000) is None
        assert {t.name: t.revoked_at_ms is not None for t in list_tokens(session)} == {"old": True, "short": False}
        with pytest.raises(NotFoundError):
            revoke_token(session, "missing")


@pytest.mark.parametrize(("name", "role"), [("x", "root"), ("", "admin"), ("a\x00b", "admin"), ("n" * 129, "viewer")])
def test_bad_token_requests_are_refused(any_engine: Engine, name: str, role: str) -> None:
    with Session(any_engine) as session, pytest.raises(InvalidRequestError):
        create_token(session, name=name, role=role)


def test_the_audit_log_pages_newest_first(any_engine: Engine) -> None:
    with Session(any_engine) as session:
        for i in range(5):
            audit.record(session, actor="cli", action="deployment.create", target=f"dep-{i}", detail={"i": i})
        session.commit()
        first = audit.entries(session, limit=3)
        assert [e.target for e in first] == ["dep-4", "dep-3", "dep-2"]
        rest = audit.entries(session, limit=3, before_id=first[-1].id)
        assert [e.target for e in rest] == ["dep-1", "dep-0"] and rest[0].detail == {"i": 1}
