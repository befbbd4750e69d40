from __future__ import annotations

from typing import Any

from fastapi import Query, Request, Response
from google.protobuf.json_format import MessageToDict
from pydantic import TypeAdapter

from cloud import monitoring, registry
from cloud.api.auth import api_router
from cloud.api.deps import SessionDep, cached_json
from cloud.api.schemas import AccuracyLinePublic, ModelSummary, ModelVersionDetail
from cloud.db.tables import ArtifactPublic, ModelVersion, ModelVersionPublic
from cloud.monitoring import feedback

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


@router.get("/{model_id}/versions/{version}/accuracy", response_model=list[AccuracyLinePublic])
def field_accuracy(
    session: SessionDep, model_id: str, version: str, by: feedback.GroupBy = "device",
    window_s: int = Query(default=3600, ge=1, le=366 * 86_400), since_ms: int | None = None,
) -> list[feedback.AccuracyLine]:  # fmt: skip
    """Accuracy (regressors: mean absolute error) of this version's sampled predictions that have a label
    from the field, per device, per window of `window_s` or for the whole version, with 95 % intervals."""
    return feedback.field_accuracy(session, model_id, _version(version), by=by, window_ms=window_s * 1000,
                                   since_ms=since_ms)  # fmt: skip
