"""Alerts where people look: drift and field-accuracy alerts per model version, kept as AlertRecord rows.

    drift      the model version's fleet drift report over the last `drift_lookback_s` of telemetry raises
               an alert (cloud.monitoring.summaries: inputs, predictions, confidence or labels, any window, device
               or the fleet's sum, in one false-discovery family); the alert names the driving devices
    accuracy   a classifier's field accuracy over the last `accuracy_lookback_s`, weighted by the samples'
               inclusion probabilities (cloud.monitoring.feedback, Horvitz-Thompson), is below the accuracy
               the manifest states (the compiler's held-out figure) by more than `accuracy_drop`, with 95 %
               confidence: the interval's upper end is below that line, and `min_labelled` labels at least

`evaluate` is pure reading; `apply` records what changed and returns the transitions (raised, cleared)
that this process won, so when several cloud workers evaluate, each transition is announced once (the
console, Prometheus and the webhook all read or follow these rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import and_, update
from sqlmodel import Session, col, select

from cloud import registry
from cloud.db import insert_ignore
from cloud.db.tables import AlertRecord, ModelVersion, SampleRecord, TelemetryRecord
from cloud.errors import NotFoundError
from cloud.monitoring import feedback, summaries
from cloud.types import ClockMs, now_ms
from protocols.v1 import messages_pb2 as pb

Kind = Literal["drift", "accuracy"]
KINDS: tuple[Kind, ...] = ("drift", "accuracy")


@dataclass(frozen=True)
class AlertPolicy:
    drift_lookback_s: int = 3_600
    accuracy_lookback_s: int = 7 * 86_400
    accuracy_drop: float = 0.05
    min_labelled: int = 30
    max_devices: int = 10  # devices an alert names
    max_versions: int = 50  # model versions evaluated per tick, the most recently active first


DEFAULT_POLICY = AlertPolicy()


@dataclass(frozen=True)
class Alert:
    kind: Kind
    model_id: str
    version: str
    summary: str
    devices: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.model_id}@{self.version}"


@dataclass(frozen=True)
class Transition:
    event: Literal["alert.raised", "alert.cleared"]
    alert: dict[str, Any]  # the AlertRecord's fields
    at_ms: int


def _recent_versions(
    session: Session, table: Any, time_column: Any, since_ms: int, limit: int
) -> list[tuple[str, str]]:
    # only versions the registry has: a device naming made-up ones (its telemetry and samples say any model and
    # version) filled the limit with them, and the real versions' alerts were never evaluated (tests/attacks)
    registered = and_(col(ModelVersion.model_id) == table.model_id, col(ModelVersion.version) == table.model_version)
    rows = session.exec(
        select(table.model_id, table.model_version)
        .join(ModelVersion, registered)
        .where(time_column >= since_ms)
        .where(table.model_id != "")
        .group_by(table.model_id, table.model_version)
        .order_by(table.model_id, table.model_version)  # a stable order; the limit is a safety cap
        .limit(limit)
    ).all()
    return [(m, v) for m, v in rows]


def drift_alert(report: summaries.DriftReport, policy: AlertPolicy) -> Alert | None:
    if not report.alert or report.attribution is None:
        return None
    a = report.attribution
    drivers = a.devices[: policy.max_devices]
    what = []
    if a.fleet_features:
        what.append("features " + ", ".join(f"f{i}" for i in a.fleet_features[:8]))
    if a.fleet_predictions:
        what.append("predictions")
    if a.fleet_confidence:
        what.append("confidence")
    names = [line.name for line in report.labels]  # multilabel: a label's name by its index

    def labels(indexes: list[int]) -> list[str]:
        return [names[i] if i < len(names) else str(i) for i in indexes]

    if a.fleet_labels:
        what.append("labels " + ", ".join(labels(a.fleet_labels)[:8]))
    where = f"fleet-wide on {' and '.join(what)}" if what else f"on {len(a.devices)} device(s)"
    summary = f"{report.model_id}@{report.version}: input/output drift {where}"
    if drivers:
        others = " and others" if len(a.devices) > 3 else ""
        summary += "; driven by " + ", ".join(d.device_id for d in drivers[:3]) + others
    detail = {
        "fleet_features": a.fleet_features, "fleet_predictions": a.fleet_predictions,
        "fleet_confidence": a.fleet_confidence, "fleet_labels": labels(a.fleet_labels),
        "devices_drifted": len(a.devices),
        "drifted_windows": report.drifted_windows, "tests": report.tests, "windows": report.windows,
        "drivers": [
            {"device_id": d.device_id, "features": d.features[:16], "predictions": d.predictions,
             "confidence": d.confidence, "labels": labels(d.labels)[:16], "share": round(d.share, 4)}
            for d in drivers
        ],
    }  # fmt: skip
    return Alert("drift", report.model_id, report.version, summary, [d.device_id for d in drivers], detail)


def accuracy_alert(
    model_id: str, version: str, line: feedback.AccuracyLine, stated: float | None, policy: AlertPolicy,
    devices: Sequence[feedback.AccuracyLine] = (),
) -> Alert | None:  # fmt: skip
    if stated is None or line.weighted is None or line.weighted_high is None or line.labelled < policy.min_labelled:
        return None
    floor = stated - policy.accuracy_drop
    if line.weighted_high >= floor:
        return None
    worst = sorted((d for d in devices if d.weighted is not None), key=lambda d: (d.weighted or 0.0, d.key))
    named = [d.key for d in worst[: policy.max_devices] if (d.weighted or 0.0) < floor]
    summary = (
        f"{model_id}@{version}: field accuracy {line.weighted:.3f} (95 % {line.weighted_low or 0:.3f}-"
        f"{line.weighted_high:.3f}, {line.labelled} labels) below the stated {stated:.3f} less {policy.accuracy_drop:g}"
    )
    detail = {
        "accuracy": line.weighted, "low": line.weighted_low, "high": line.weighted_high, "labelled": line.labelled,
        "unweighted": line.accuracy, "stated": stated, "floor": floor,
        "devices": [
            {"device_id": d.key, "accuracy": d.weighted, "labelled": d.labelled} for d in worst[: policy.max_devices]
        ],
    }  # fmt: skip
    return Alert("accuracy", model_id, version, summary, named, detail)


def evaluate(session: Session, policy: AlertPolicy = DEFAULT_POLICY, *, clock: ClockMs = now_ms) -> list[Alert]:
    """The alerts that hold now (reads only)."""
    now = clock()
    alerts: list[Alert] = []
    since = now - policy.drift_lookback_s * 1000
    t = TelemetryRecord
    for model_id, version in _recent_versions(session, t, col(t.window_end_ms), since, policy.max_versions):
        try:
            report = summaries.fleet_drift(session, model_id, version, since_ms=since)
        except NotFoundError:
            continue  # telemetry naming a version the registry does not know
        found = drift_alert(report, policy)
        if found is not None:
            alerts.append(found)
    since = now - policy.accuracy_lookback_s * 1000
    s = SampleRecord
    for model_id, version in _recent_versions(session, s, col(s.ts_ms), since, policy.max_versions):
        try:
            manifest = registry.manifest_of(registry.get_model_version(session, model_id, version))
        except NotFoundError:
            continue
        if manifest.io.task == pb.TASK_REGRESSION or "accuracy" not in manifest.metrics:
            continue
        lines = feedback.field_accuracy(session, model_id, version, by="version", since_ms=since)
        if not lines:
            continue
        per_device = feedback.field_accuracy(session, model_id, version, by="device", since_ms=since)
        found = accuracy_alert(model_id, version, lines[0], float(manifest.metrics["accuracy"]), policy, per_device)
        if found is not None:
            alerts.append(found)
    return alerts


def _as_dict(row: AlertRecord) -> dict[str, Any]:
    return {
        "key": row.key, "kind": row.kind, "model_id": row.model_id, "version": row.model_version,
        "active": row.active, "summary": row.summary, "devices": list(row.devices), "detail": dict(row.detail),
        "raised_at_ms": row.raised_at_ms, "updated_at_ms": row.updated_at_ms, "cleared_at_ms": row.cleared_at_ms,
    }  # fmt: skip


def apply(session: Session, alerts: Sequence[Alert], *, clock: ClockMs = now_ms) -> list[Transition]:
    """Record `alerts` as the active set: new ones raised, gone ones cleared, held ones refreshed. Returns the
    transitions this call made (a conditional UPDATE / INSERT: another worker's identical call makes none).
    The caller commits."""
    now = clock()
    changes: list[tuple[Literal["alert.raised", "alert.cleared"], str]] = []
    wanted = {a.key: a for a in alerts}
    for alert in wanted.values():
        values = {"summary": alert.summary, "devices": alert.devices, "detail": alert.detail, "updated_at_ms": now}
        inserted = insert_ignore(session, AlertRecord, [{
            "key": alert.key, "kind": alert.kind, "model_id": alert.model_id, "model_version": alert.version,
            "active": True, "raised_at_ms": now, **values,
        }], ["key"])  # fmt: skip
        raised = inserted > 0
        if not raised:
            result = session.exec(  # type: ignore[call-overload]
                update(AlertRecord).where(col(AlertRecord.key) == alert.key).where(col(AlertRecord.active).is_(False))
                .values(active=True, raised_at_ms=now, cleared_at_ms=None, **values)
            )  # fmt: skip
            raised = result.rowcount > 0
            if not raised:  # still active: refresh what it says
                refresh = update(AlertRecord).where(col(AlertRecord.key) == alert.key).values(**values)
                session.exec(refresh)  # type: ignore[call-overload]
        if raised:
            changes.append(("alert.raised", alert.key))
    active = session.exec(select(AlertRecord).where(col(AlertRecord.active).is_(True))).all()
    for row in active:
        if row.key in wanted:
            continue
        result = session.exec(  # type: ignore[call-overload]
            update(AlertRecord).where(col(AlertRecord.id) == row.id).where(col(AlertRecord.active).is_(True))
            .values(active=False, cleared_at_ms=now, updated_at_ms=now)
        )  # fmt: skip
        if result.rowcount > 0:
            changes.append(("alert.cleared", row.key))
    if not changes:
        return []
    session.flush()
    session.expire_all()  # the rows as the UPDATEs left them
    keys = [key for _, key in changes]
    rows = {r.key: r for r in session.exec(select(AlertRecord).where(col(AlertRecord.key).in_(keys)))}
    return [Transition(event, _as_dict(rows[key]), now) for event, key in changes]


def listing(session: Session, *, include_cleared: bool = True, limit: int = 200) -> list[dict[str, Any]]:
    """Alerts for people: active ones first, then the latest cleared, newest first."""
    query = select(AlertRecord).order_by(col(AlertRecord.active).desc(), col(AlertRecord.updated_at_ms).desc())
    if not include_cleared:
        query = query.where(col(AlertRecord.active).is_(True))
    return [_as_dict(r) for r in session.exec(query.limit(limit))]

