"""Operators' API tokens: a role each (viewer < deployer < admin), shown once, stored as a hash.

A token reads `ef_<id>_<secret>`: the id is public (lists, the audit log) and carries a keyed tag, so the
cloud tells a made-up id from one it issued without a lookup (cloud.identity.token_tags; ids issued before
tags have none and still work); the secret is 32 random bytes. The
console API reads it from `Authorization: Bearer ...`; every mutating call needs deployer or admin, token
and audit management needs admin (see `cloud.api.auth`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlmodel import Session, col, select

from cloud.errors import InvalidRequestError, NotFoundError
from cloud.identity.records import ApiToken
from cloud.identity.token_tags import API_TOKEN, load_keys, mint_id
from cloud.types import now_ms

TOKEN_PREFIX = "ef_"


class Role(StrEnum):
    VIEWER = "viewer"
    DEPLOYER = "deployer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]  # a dict look-up: every fast-lane answer asks it (list(Role).index was 10 us)

    def allows(self, required: Role) -> bool:
        return self.rank >= required.rank


_RANKS = {role: rank for rank, role in enumerate(Role)}


@dataclass(frozen=True)
class Operator:
    """Who made a request: the token's id and name, and its role."""

    token_id: str
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"token {self.token_id} ({self.name})"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    session: Session, *, name: str, role: Role | str, created_by: str = "", ttl_days: float | None = None
) -> tuple[ApiToken, str]:
    """A new token row and its full text (shown once; only the hash is kept)."""
    try:
        role = Role(role)
    except ValueError:
        raise InvalidRequestError(f"unknown role {role!r}: use {', '.join(Role)}") from None
    if not name or len(name) > 128 or "\x00" in name:
        raise InvalidRequestError("a token needs a name of 1-128 characters")
    token_id = mint_id(load_keys(session), API_TOKEN)  # recognisable as ours without a lookup
    secret = secrets.token_urlsafe(32)
    expires = None if ttl_days is None else now_ms() + int(ttl_days * 86_400_000)
    row = ApiToken(
        id=token_id, name=name, role=role.value, secret_sha256=_digest(secret), created_by=created_by,
        expires_at_ms=expires,
    )  # fmt: skip
    session.add(row)
    return row, f"{TOKEN_PREFIX}{token_id}_{secret}"


@dataclass(frozen=True)
class TokenRecord:
    """What the database says of a token id: enough to judge a presented secret without the session
    (the API keeps these for a couple of seconds, see cloud.api.auth)."""

    id: str
    name: str
    role: Role
    secret_sha256: str
    revoked_at_ms: int | None
    expires_at_ms: int | None


def parse_token(token: str) -> tuple[str, str] | None:
    """`ef_<id>_<secret>` as (id, secret), or None when it cannot be one of ours."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    token_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or not token_id or not secret or len(token_id) > 32:
        return None
    return token_id, secret


def find_token(session: Session, token_id: str) -> TokenRecord | None:
    row = session.get(ApiToken, token_id)
    if row is None:
        return None
    return TokenRecord(row.id, row.name, Role(row.role), row.secret_sha256, row.revoked_at_ms, row.expires_at_ms)


def verdict(record: TokenRecord | None, secret: str, *, now: int | None = None) -> Operator | None:
    """The operator when `secret` is the record's and the token is neither revoked nor expired."""
    if record is None or not hmac.compare_digest(record.secret_sha256, _digest(secret)):
        return None
    current = now_ms() if now is None else now
    if record.revoked_at_ms is not None or (record.expires_at_ms is not None and record.expires_at_ms <= current):
        return None
    return Operator(record.id, record.name, record.role)


def authenticate(session: Session, token: str, *, now: int | None = None) -> Operator | None:
    """The operator a token belongs to, or None for anything unknown, revoked, expired or malformed."""
    parsed = parse_token(token)
    if parsed is None:
        return None
    return verdict(find_token(session, parsed[0]), parsed[1], now=now)


def revoke_token(session: Session, token_id: str) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"no API token {token_id!r}")
    if row.revoked_at_ms is None:
        row.revoked_at_ms = now_ms()
        session.add(row)
    return row


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.exec(select(ApiToken).order_by(col(ApiToken.created_at_ms))))
