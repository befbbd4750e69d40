from __future__ import annotations

from cloud import registry
from cloud.api.auth import api_router
from cloud.api.deps import SessionDep
from cloud.db.tables import Dataset, DatasetPublic, PipelineRun, PipelineRunPublic

router = api_router(tags=["metadata"])


@router.get("/datasets", response_model=list[DatasetPublic])
def list_datasets(session: SessionDep) -> list[Dataset]:
    return registry.list_datasets(session)


@router.get("/runs", response_model=list[PipelineRunPublic])
def list_runs(session: SessionDep) -> list[PipelineRun]:
    return registry.list_runs(session)


@router.get("/runs/{run_id}", response_model=PipelineRunPublic)
def get_run(session: SessionDep, run_id: str) -> PipelineRun:
    return registry.get_run(session, run_id)
