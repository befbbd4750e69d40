"""Enrollment: single-use, expiring tokens that turn into a device's broker credentials, exactly once.

An operator creates a token (`edgefleet devices enroll`, optionally naming the device id and labels it
will carry); the device presents it once (`edgefleet-agent provision --token ...`) and receives a broker
user name (its device id) and a random password, of which the cloud keeps only the hash. Redeeming is a
conditional update (`used_at_ms IS NULL`), so two devices racing with one token cannot both win.
A device id that already holds live credentials can only be re-enrolled with a token naming it.
Redeeming also creates the device's row (with the token's labels) in the caller's transaction: enrollment
is the only way a device enters the fleet (`enroll_device` does the same without a token, for development
and tests). `enrolled_labels` is what ingestion asks, once per batch, before storing anything.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlalchemy import update
from sqlmodel import Session, col, select

from cloud.db import among
from cloud.errors import ConflictError, EnrollmentRefused, InvalidRequestError
from cloud.fleet import enroll_row, mark_revoked
from cloud.identity.passwords import hash_password, new_secret
from cloud.identity.records import DeviceCredential, EnrollmentToken
from cloud.identity.token_tags import ENROLLMENT_TOKEN, load_keys, mint_id
from cloud.types import now_ms
from protocols.topics import TopicError, validate_device_id

TOKEN_PREFIX = "efe_"
DEFAULT_TTL_S = 24 * 3600
MAX_TTL_S = 30 * 24 * 3600


@dataclass(frozen=True)
class Enrolled:
    device_id: str
    password: str  # shown to the device once; only its hash is stored
    labels: dict[str, str]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_enrollment_token(
    session: Session, *, labels: dict[str, str] | None = None, device_id: str | None = None, ttl_s: int = DEFAULT_TTL_S
) -> tuple[EnrollmentToken, str]:
    if not 60 <= ttl_s <= MAX_TTL_S:
        raise InvalidRequestError(f"enrollment tokens live 60 s to {MAX_TTL_S // 86400} days, not {ttl_s} s")
    if device_id is not None:
        try:
            validate_device_id(device_id)
        except TopicError as exc:
            raise InvalidRequestError(str(exc)) from None
    token_id, secret = mint_id(load_keys(session), ENROLLMENT_TOKEN), secrets.token_urlsafe(32)
    row = EnrollmentToken(
        id=token_id,
        secret_sha256=_digest(secret),
        labels=dict(labels or {}),
        device_id=device_id,
        expires_at_ms=now_ms() + ttl_s * 1000,
    )
    session.add(row)
    return row, f"{TOKEN_PREFIX}{token_id}_{secret}"


def token_id_of(token: str) -> str | None:
    """The public part of an enrollment token's text (for lists and the audit log), or None if it has none."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    token_id, sep, secret = token.removeprefix(TOKEN_PREFIX).partition("_")
    return token_id if token_id and sep and secret else None


def list_enrollment_tokens(session: Session, *, limit: int = 1000) -> list[EnrollmentToken]:
    """Newest first."""
    query = select(EnrollmentToken).order_by(col(EnrollmentToken.created_at_ms).desc()).limit(limit)
    return list(session.exec(query))


def redeem(session: Session, token: str, device_id: str) -> Enrolled:
    """Spend `token` for `device_id`: its credentials, created now. The caller commits."""
    try:
        validate_device_id(device_id)
    except TopicError as exc:
        raise InvalidRequestError(str(exc)) from None
    token_id = token_id_of(token)
    secret = token.removeprefix(f"{TOKEN_PREFIX}{token_id}_") if token_id else ""
    row = session.get(EnrollmentToken, token_id) if token_id and secret else None
    if row is None:
        raise EnrollmentRefused("unknown token")
    if not hmac.compare_digest(row.secret_sha256, _digest(secret)):
        raise EnrollmentRefused("wrong secret")
    now = now_ms()
    if row.expires_at_ms <= now:
        raise EnrollmentRefused("expired")
    if row.device_id is not None and row.device_id != device_id:
        raise EnrollmentRefused(f"token is for device {row.device_id}")
    if row.used_at_ms is not None:  # before the conflict check: a spent token learns nothing about ids
        raise EnrollmentRefused("already used")
    existing = session.get(DeviceCredential, device_id)
    if existing is not None and existing.revoked_at_ms is None and row.device_id != device_id:
        raise ConflictError(f"device {device_id} is already enrolled; re-enroll it with a token that names it")
    spent = session.execute(  # conditional: of two racing redemptions, exactly one changes the row
        update(EnrollmentToken)
        .where(col(EnrollmentToken.id) == token_id, col(EnrollmentToken.used_at_ms).is_(None))
        .values(used_at_ms=now, used_by=device_id)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise EnrollmentRefused("already used")
    return _issue(session, device_id, dict(row.labels), existing)


def enroll_device(session: Session, device_id: str, labels: Mapping[str, str] | None = None) -> Enrolled:
    """Enroll device_id without a token (development, the demo, tests): fresh credentials and its row,
    replacing any it had. Operators enroll devices with tokens; this is the in-process shortcut."""
    try:
        validate_device_id(device_id)
    except TopicError as exc:
        raise InvalidRequestError(str(exc)) from None
    return _issue(session, device_id, dict(labels or {}), session.get(DeviceCredential, device_id))


def _issue(session: Session, device_id: str, labels: dict[str, str], existing: DeviceCredential | None) -> Enrolled:
    password, now = new_secret(), now_ms()
    if existing is None:
        session.add(DeviceCredential(device_id=device_id, password_hash=hash_password(password), labels=labels))
    else:
        existing.password_hash, existing.revoked_at_ms, existing.created_at_ms = hash_password(password), None, now
        existing.labels = labels
        session.add(existing)
    enroll_row(session, device_id, labels)
    session.flush()
    return Enrolled(device_id, password, labels)


def revoke_device(session: Session, device_id: str) -> bool:
    """Withdraw a device's broker credentials: the embedded broker refuses it at once (and drops it within its
    recheck), Mosquitto after its next reload. True if it had any."""
    credential = session.get(DeviceCredential, device_id)
    if credential is None or credential.revoked_at_ms is not None:
        return False
    credential.revoked_at_ms = now_ms()
    session.add(credential)
    mark_revoked(session, device_id)
    return True


def is_enrolled(session: Session, device_id: str) -> bool:
    credential = session.get(DeviceCredential, device_id)
    return credential is not None and credential.revoked_at_ms is None


def enrolled_labels(session: Session, device_ids: Collection[str]) -> dict[str, dict[str, str]]:
    """device id -> the labels its enrollment fixed, for each of device_ids holding live credentials
    (one query; ids missing from the answer are not enrolled, or revoked)."""
    if not device_ids:
        return {}
    query = select(DeviceCredential.device_id, DeviceCredential.labels).where(
        among(session, col(DeviceCredential.device_id), device_ids), col(DeviceCredential.revoked_at_ms).is_(None)
    )
    return {device_id: dict(labels or {}) for device_id, labels in session.exec(query)}


def live_password_hashes(session: Session) -> dict[str, str]:
    """device id -> password hash of every device whose credentials are not revoked (for the broker)."""
    query = select(DeviceCredential).where(col(DeviceCredential.revoked_at_ms).is_(None))
    return {c.device_id: c.password_hash for c in session.exec(query)}


def expected_devices(session: Session, device_ids: Collection[str]) -> set[str]:
    """Those of device_ids the fleet knows or awaits: live credentials, or named by an unused, unexpired
    enrollment token (a deployment may wait for a device that is about to enroll)."""
    if not device_ids:
        return set()
    ids = list(device_ids)
    found = set(enrolled_labels(session, ids))
    waiting = select(EnrollmentToken.device_id).where(
        col(EnrollmentToken.device_id).in_(ids),
        col(EnrollmentToken.used_at_ms).is_(None),
        col(EnrollmentToken.expires_at_ms) > now_ms(),
    )
    found.update(d for d in session.exec(waiting) if d is not None)
    return found
