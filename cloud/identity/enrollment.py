"""Enrollment: single-use, expiring tokens that turn into a device's broker credentials, exactly once.

An operator creates a token (`edgefleet devices enroll`, optionally naming the device id and labels it
will carry); the device presents it once (`edgefleet-agent provision --token ...`) and receives a broker
user name (its device id) and a random password, of which the cloud keeps only the hash. Redeeming is a
conditional update (`used_at_ms IS NULL`), so two devices racing with one token cannot both win.
A device id that already holds live credentials can only be re-enrolled with a token naming it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import update
from sqlmodel import Session, col, select

from cloud.errors import ConflictError, EnrollmentRefused, InvalidRequestError
from cloud.identity.passwords import hash_password, new_secret
from cloud.identity.records import DeviceCredential, EnrollmentToken
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
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    row = EnrollmentToken(
        id=token_id,
        secret_sha256=_digest(secret),
        labels=dict(labels or {}),
        device_id=device_id,
        expires_at_ms=now_ms() + ttl_s * 1000,
    )
    session.add(row)
    return row, f"{TOKEN_PREFIX}{token_id}_{secret}"


def redeem(session: Session, token: str, device_id: str) -> Enrolled:
    """Spend `token` for `device_id`: its credentials, created now. The caller commits."""
    try:
        validate_device_id(device_id)
    except TopicError as exc:
        raise InvalidRequestError(str(exc)) from None
    refused = EnrollmentRefused("enrollment token refused: unknown, already used, expired or for another device")
    token_id, sep, secret = token.removeprefix(TOKEN_PREFIX).partition("_")
    row = session.get(EnrollmentToken, token_id) if token.startswith(TOKEN_PREFIX) and sep and secret else None
    if row is None or not hmac.compare_digest(row.secret_sha256, _digest(secret)):
        raise refused
    now = now_ms()
    if row.expires_at_ms <= now or (row.device_id is not None and row.device_id != device_id):
        raise refused
    existing = session.get(DeviceCredential, device_id)
    if existing is not None and existing.revoked_at_ms is None and row.device_id != device_id:
        raise ConflictError(f"device {device_id} is already enrolled; re-enroll it with a token that names it")
    spent = session.execute(
        update(EnrollmentToken)
        .where(col(EnrollmentToken.id) == token_id, col(EnrollmentToken.used_at_ms).is_(None))
        .values(used_at_ms=now, used_by=device_id)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise refused
    password = new_secret()
    if existing is None:
        session.add(DeviceCredential(device_id=device_id, password_hash=hash_password(password)))
    else:
        existing.password_hash, existing.revoked_at_ms, existing.created_at_ms = hash_password(password), None, now
        session.add(existing)
    return Enrolled(device_id, password, dict(row.labels))


def revoke_device(session: Session, device_id: str) -> bool:
    """Withdraw a device's broker credentials (the broker refuses it from its next reload). True if it had any."""
    credential = session.get(DeviceCredential, device_id)
    if credential is None or credential.revoked_at_ms is not None:
        return False
    credential.revoked_at_ms = now_ms()
    session.add(credential)
    return True


def is_enrolled(session: Session, device_id: str) -> bool:
    credential = session.get(DeviceCredential, device_id)
    return credential is not None and credential.revoked_at_ms is None


def live_password_hashes(session: Session) -> dict[str, str]:
    """device id -> password hash of every device whose credentials are not revoked (for the broker)."""
    query = select(DeviceCredential).where(col(DeviceCredential.revoked_at_ms).is_(None))
    return {c.device_id: c.password_hash for c in session.exec(query)}
