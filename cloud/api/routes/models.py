from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from google.protobuf.json_format import MessageToDict
from pydantic import TypeAdapter

from cloud import monitoring, registry
from cloud.api.auth import api_router
from cloud.api.deps import SessionDep, cached_json
from cloud.api.schemas import ModelSummary, ModelVersionDetail
from cloud.db.tables import ArtifactPublic, ModelVersion, ModelVersionPublic

router = api_router(prefix="/models", tags=["models"])

LATEST = "latest"
MODEL_LIST = TypeAdapter(list[ModelSummary])


def _version(version: str) -> str | None:
    return None if version == LATEST else version


@router.get("", response_model=list[ModelSummary])
async def list_models(request: Request) -> Response:
    return await cached_json(request, "models", registry.list_models, MODEL_LIST)


@router.get("/{model_id}/versions", response_model=list[ModelVersionPublic])
def list_versions(session: SessionDep, model_id: str) -> list[ModelVersion]:
    versions = registry.list_model_versions(session, model_id)
    if not versions:
        registry.get_model_version(session, model_id)  # raises NotFoundError with a clear message
    return versions


@router.get("/{model_id}/versions/{version}", response_model=ModelVersionDetail)
def get_version(session: SessionDep, model_id: str, version: str) -> ModelVersionDetail:
    mv = registry.get_model_version(session, model_id, _version(version))
    manifest = registry.manifest_of(mv)
    manifest.ClearField("self_test")
    manifest.ClearField("reference")
    return ModelVersionDetail(
        **ModelVersionPublic.model_validate(mv).model_dump(),
        artifacts=[ArtifactPublic.model_validate(a) for a in registry.artifacts_of(session, mv.id or 0)],
        manifest=MessageToDict(manifest, preserving_proto_field_name=True),
    )


@router.get("/{model_id}/versions/{version}/lineage")
def get_lineage(session: SessionDep, model_id: str, version: str) -> dict[str, Any]:
    return registry.lineage(session, model_id, _version(version))


@router.get("/{model_id}/versions/{version}/drift", response_model=monitoring.DriftReport)
def fleet_drift(
    session: SessionDep, model_id: str, version: str, since_ms: int | None = None
) -> monitoring.DriftReport:
    return monitoring.fleet_drift(session, model_id, _version(version), since_ms=since_ms)
