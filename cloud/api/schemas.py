"""Response shapes the API adds on top of the table families in cloud.db.tables."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from cloud.db.tables import ArtifactPublic, DeploymentPublic, DeploymentTargetPublic, ModelVersionPublic


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
