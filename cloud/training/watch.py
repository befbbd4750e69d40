"""Reading the monitoring for the retrain triggers: the drift report and field accuracy of the model's
champion (its latest version before any retrain), and when the last retrain ran. The rules themselves
are pure (`triggers`); this gathers their inputs, so cron or the demo can ask "should we retrain now?"."""

from __future__ import annotations

from sqlmodel import Session, col, select

from cloud import monitoring, registry
from cloud.db.tables import PipelineRun
from cloud.errors import NotFoundError
from cloud.monitoring import feedback
from cloud.registry import aliases
from cloud.training import triggers
from cloud.training.triggers import Trigger, TriggerPolicy


def champion_version(session: Session, model_id: str) -> str:
    """The champion alias, or the latest version while there is none (read only: nothing is recorded)."""
    try:
        return aliases.resolve(session, model_id, aliases.CHAMPION)
    except NotFoundError:
        return registry.get_model_version(session, model_id).version


def last_retrain_ms(session: Session, model_id: str) -> int | None:
    runs = session.exec(
        select(PipelineRun).where(PipelineRun.pipeline == "retrain").order_by(col(PipelineRun.started_at_ms).desc())
    )
    for run in runs:  # the model is in the parameters (a JSON column): filtered here, on few rows
        if run.parameters.get("model_id", model_id) == model_id:
            return run.started_at_ms
    return None


def detect(
    session: Session, model_id: str, policy: TriggerPolicy, *, now_ms: int, since_ms: int | None = None
) -> Trigger | None:
    """The first retrain trigger that fires now (drift, then an accuracy drop, then the schedule), or None."""
    version = champion_version(session, model_id)
    report = monitoring.fleet_drift(session, model_id, version, since_ms=since_ms)
    features = [f.name or f"f{f.index}" for f in report.features if f.drifted]
    devices = [d.device_id for d in report.devices if d.drifted_features]
    drift = triggers.on_drift(features, devices, policy) if report.alert else None
    evaluated = registry.manifest_of(registry.get_model_version(session, model_id, version)).metrics.get("accuracy")
    accuracy = None
    if evaluated is not None:
        for line in feedback.field_accuracy(session, model_id, version, by="version", since_ms=since_ms):
            accuracy = triggers.on_accuracy(line.labelled, line.accuracy, line.high, evaluated, policy)
    schedule = triggers.on_schedule(last_retrain_ms(session, model_id), now_ms, policy)
    return triggers.first(drift, accuracy, schedule)
