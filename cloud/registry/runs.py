"""Pipeline runs in the ML metadata store: opened, timed step by step, finished as succeeded or failed."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from sqlmodel import Session, col, select

from cloud.db import RunStatus, fetch_or_raise, insert_ignore
from cloud.db.tables import PipelineRun, PipelineRunCreate
from cloud.errors import InvalidRequestError
from cloud.registry.datasets import get_dataset
from cloud.types import ClockMs, now_ms


def start_run(session: Session, run: PipelineRunCreate, *, run_id: str | None = None) -> PipelineRun:
    """Open a pipeline run. Passing the id of an existing run resumes it (returns it unchanged), also when
    another process opens it at the same moment (a run id named by its inputs: two of them started at once)."""
    if run_id is not None and (existing := session.get(PipelineRun, run_id)) is not None:
        return existing
    if run.dataset_hash is not None:
        get_dataset(session, run.dataset_hash)  # a clear error rather than a foreign-key failure
    record = PipelineRun(id=run_id or uuid.uuid4().hex, **run.model_dump())
    if run_id is None:
        session.add(record)
        session.flush()
        return record
    insert_ignore(session, PipelineRun, [record.model_dump()], ["id"])
    return get_run(session, run_id)


def get_run(session: Session, run_id: str) -> PipelineRun:
    return fetch_or_raise(session, PipelineRun, run_id, missing=f"no pipeline run {run_id}")


def record_step(session: Session, run_id: str, step: str, seconds: float) -> PipelineRun:
    run = get_run(session, run_id)
    run.step_timings_s = {**run.step_timings_s, step: round(float(seconds), 6)}  # reassign: JSON is not tracked
    session.add(run)
    return run


def finish_run(
    session: Session,
    run_id: str,
    *,
    status: str = RunStatus.SUCCEEDED,
    metrics: Mapping[str, float] | None = None,
    step_timings_s: Mapping[str, float] | None = None,
    error: str | None = None,
    clock: ClockMs = now_ms,
) -> PipelineRun:
    if status not in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        raise InvalidRequestError(f"a run finishes as 'succeeded' or 'failed', not {status!r}")
    run = get_run(session, run_id)
    run.status = status
    run.metrics = {**run.metrics, **{k: float(v) for k, v in (metrics or {}).items()}}
    run.step_timings_s = {**run.step_timings_s, **dict(step_timings_s or {})}
    run.error = error
    run.finished_at_ms = clock()
    session.add(run)
    return run


def list_runs(session: Session) -> list[PipelineRun]:
    return list(session.exec(select(PipelineRun).order_by(col(PipelineRun.started_at_ms).desc())))
