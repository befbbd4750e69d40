"""Response shapes the API adds on top of the table families in cloud.db.tables."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from cloud.db.bounds import Text
from cloud.db.tables import ArtifactPublic, DeploymentPublic, DeploymentTargetPublic, ModelVersionPublic
from cloud.identity.tokens import Role


class ErrorBody(BaseModel):
    error: str  # stable machine code (CloudError.code)
    detail: str


class ModelSummary(BaseModel):
    model_id: str
    latest_version: str
    latest_sequence: int
    versions: int


class ModelVersionDetail(ModelVersionPublic):
    artifacts: list[ArtifactPublic]
    manifest: dict[str, Any]  # the signed manifest's content, minus the bulky self-test and reference


class DeploymentDetail(DeploymentPublic):
    targets: list[DeploymentTargetPublic]
    counts: dict[str, int]  # targets per status


class Health(BaseModel):
    status: str  # "ok" | "degraded"
    database: str
    components: dict[str, Any]


class TokenCreate(BaseModel):
    name: Text = Field(min_length=1, max_length=128)
    role: Role
    ttl_days: float | None = Field(default=None, gt=0, le=3650)  # None: never expires


class TokenPublic(BaseModel):
    """A token as lists show it: never its secret or the secret's hash."""

    id: str
    name: str
    role: str
    created_at_ms: int
    created_by: str
    expires_at_ms: int | None
    revoked_at_ms: int | None


class TokenCreated(TokenPublic):
    token: str  # the full token text, shown this once


class AuditEntryPublic(BaseModel):
    id: int
    at_ms: int
    actor: str
    role: str
    action: str
    target: str
    detail: dict[str, Any]
