"""The identity tables: operators' API tokens, the audit log, enrollment tokens, device credentials, and the
keys that tag token ids (cloud.identity.token_tags).

Secrets are never stored: API and enrollment tokens as the SHA-256 of their random secret (high-entropy
tokens need no slow hash), broker passwords as Mosquitto-format PBKDF2 hashes (`passwords.py`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger
from sqlmodel import Field, SQLModel

from cloud.types import now_ms


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"

    id: str = Field(primary_key=True, max_length=32)  # public part of the token, shown in lists and the audit log
    name: str = Field(max_length=128)
    role: str = Field(max_length=16)
    secret_sha256: str = Field(max_length=64)
    created_at_ms: int = Field(sa_type=BigInteger, default_factory=now_ms)
    created_by: str = Field(default="", max_length=128)
    expires_at_ms: int | None = Field(default=None, sa_type=BigInteger)
    revoked_at_ms: int | None = Field(default=None, sa_type=BigInteger)


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_entry"

    id: int | None = Field(default=None, primary_key=True)
    at_ms: int = Field(sa_type=BigInteger, default_factory=now_ms, index=True)
    actor: str = Field(max_length=160)  # "token <id> (<name>)", or "cli" for local commands
    role: str = Field(default="", max_length=16)
    action: str = Field(max_length=64)  # e.g. "deployment.create", "token.create"
    target: str = Field(default="", max_length=256)
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class EnrollmentToken(SQLModel, table=True):
    __tablename__ = "enrollment_token"

    id: str = Field(primary_key=True, max_length=32)
    secret_sha256: str = Field(max_length=64)
    labels: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    device_id: str | None = Field(default=None, max_length=64)  # when set, only this id may enroll with it
    created_at_ms: int = Field(sa_type=BigInteger, default_factory=now_ms)
    expires_at_ms: int = Field(sa_type=BigInteger)
    used_at_ms: int | None = Field(default=None, sa_type=BigInteger)
    used_by: str | None = Field(default=None, max_length=64)


class DeviceCredential(SQLModel, table=True):
    __tablename__ = "device_credential"

    device_id: str = Field(primary_key=True, max_length=64)
    password_hash: str = Field(max_length=256)
    # the labels its enrollment fixed: the device's own reports cannot change these keys
    labels: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    created_at_ms: int = Field(sa_type=BigInteger, default_factory=now_ms)
    revoked_at_ms: int | None = Field(default=None, sa_type=BigInteger)


class TagKey(SQLModel, table=True):
    """A key that tags the ids of tokens the cloud issues (cloud.identity.token_tags); the newest generation
    tags new ids, every kept one still verifies."""

    __tablename__ = "tag_key"

    generation: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    secret_hex: str = Field(max_length=64)  # 32 random bytes
    created_at_ms: int = Field(sa_type=BigInteger, default_factory=now_ms)
