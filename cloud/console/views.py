"""What each console page shows, read from the database with bounded queries and turned into charts.

Each function returns a plain dict for its template. Queries are capped (the newest N windows, events,
versions, rollouts), so a page costs the same on a fleet that has run for a year as on one started today.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import case, func, not_
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from cloud import monitoring, registry
from cloud.console import charts, device_facts
from cloud.db.tables import Deployment, DeploymentTarget, Device, EventRecord, ModelVersion, TelemetryRecord
from cloud.errors import CloudError, NotFoundError
from cloud.identity import audit
from cloud.monitoring import feedback
from cloud.monitoring.summaries import latency_quantiles
from cloud.rollout import target_counts, targets_of, waiting_reason
from cloud.rollout.records import Rollout, RolloutDecision, RolloutGateSample
from cloud.types import now_ms

MAX_DEVICES = 500  # rows on the fleet page
MAX_TARGETS = 500  # rows on a deployment's page
WAVE_SHOWN = 100  # devices a rollout's page names per wave
FLEET_RECENT_MS = 15 * 60_000  # "health at a glance": the last quarter hour of telemetry
FLEET_RECENT_ROWS = 5000
DEVICE_WINDOWS = 120  # the newest telemetry windows charted on a device page
DEVICE_EVENTS = 50
MAX_VERSIONS = 20
MAX_ROLLOUTS = 50
MAX_DEPLOYMENTS = 100
GATE_SAMPLES = 500
DECISIONS = 200
DRIFT_HEAT_DEVICES = 40
PSI_HIGH = 0.25  # monitoring.drift: a PSI above 0.25 is a significant shift

# gate name (RolloutGateSample.values) -> the policy field holding its limit, and whether it is a floor
GATE_LIMITS = {
    "install_failures": ("max_install_failure_share", False),
    "error_rate": ("max_error_rate", False),
    "p95_latency": ("max_p95_ratio", False),
    "prediction_shift": ("max_prediction_psi", False),
    "shadow_agreement": ("min_shadow_agreement", True),
}
ACTIONS_BY_STATE = {
    "running": ("pause", "cancel", "rollback"),
    "paused": ("resume", "cancel", "rollback"),
    "completed": ("rollback",),
}


def _version_of(device: Device) -> str:
    return f"{device.active_model_id}@{device.active_version}" if device.active_model_id else "none"


ERROR_SHARE = 0.01  # a device whose recent error rate is above this is "errors"
SETTLED = ("active", "idle", "unknown")  # update states that are not "updating"
HEALTH = ("ok", "updating", "offline", "errors", "failed")


def health_of(device: Device, error_rate: float | None) -> str:
    """One word for the fleet table: failed, errors, offline, updating or ok (`fleet_tiles` counts the
    same rules in SQL over the whole fleet)."""
    if device.update_state == "failed":
        return "failed"
    if error_rate is not None and error_rate > ERROR_SHARE:
        return "errors"
    if not device.online:
        return "offline"
    if device.update_state not in SETTLED:
        return "updating"
    return "ok"


def _recent_counts(since_ms: int, device_ids: list[str] | None = None) -> Any:
    """Inferences and errors per device in windows ending since `since_ms` (one grouped query)."""
    query = select(TelemetryRecord.device_id, func.sum(TelemetryRecord.inference_count).label("inferences"),
                   func.sum(TelemetryRecord.error_count).label("errors"))
    query = query.where(TelemetryRecord.window_end_ms >= since_ms)
    if device_ids is not None:
        query = query.where(col(TelemetryRecord.device_id).in_(device_ids))
    return query.group_by(TelemetryRecord.device_id)


def fleet_tiles(session: Session) -> dict[str, Any]:
    """The fleet page's tiles and charts over every device, not the page shown: online and total, devices
    per health word (health_of's rules as a CASE) and per running version, in one grouped query whose
    rows are a handful per (health, online, version). The console keeps it api_read_cache_s (pages.py)."""
    recent = _recent_counts(now_ms() - FLEET_RECENT_MS).subquery()
    health = case(
        (col(Device.update_state) == "failed", "failed"),
        (recent.c.errors > ERROR_SHARE * (recent.c.inferences + recent.c.errors), "errors"),
        (not_(col(Device.online)), "offline"),
        (col(Device.update_state).not_in(SETTLED), "updating"),
        else_="ok",
    )
    # grouped outside a subquery: PostgreSQL would not match a CASE repeated in GROUP BY (its literals are
    # bound parameters of their own)
    per_device = (select(health.label("health"), col(Device.online).label("online"),
                         col(Device.active_model_id).label("model_id"), col(Device.active_version).label("version"))
                  .select_from(Device).outerjoin(recent, recent.c.device_id == Device.id).subquery())  # fmt: skip
    c = per_device.c
    keys = (c.health, c.online, c.model_id, c.version)
    grouped = sql_select(*keys, func.count()).group_by(*keys)  # sqlmodel's select types at most 4 columns
    total = online = 0
    by_health: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    for word, is_online, model_id, version, n in session.execute(grouped):
        total += n
        online += n if is_online else 0
        by_health[word] += n
        versions[f"{model_id}@{version}" if model_id else "none"] += n
    return {
        "online": online, "total": total, "health": dict(by_health),
        "versions_chart": charts.bar_chart([(k, float(n)) for k, n in sorted(versions.items())],
                                           title="Devices per running version", width=520, height=200),
        "health_chart": charts.bar_chart([(k, float(by_health.get(k, 0))) for k in HEALTH],
                                         title="Devices by health", width=400, height=200,
                                         colors=("#16a34a", "#2563eb", "#6b7280", "#ea580c", "#dc2626")),
    }  # fmt: skip


def fleet_page(session: Session, after: str | None = None, before: str | None = None) -> dict[str, Any]:
    """MAX_DEVICES rows a page in id order, from the id after `after` (or the page ending before `before`,
    the previous page): keyset pages, so devices enrolled while an operator pages on never shift a page; the
    API's lists page the same way (cloud.api.paging). The tiles over the whole fleet are `fleet_tiles`."""
    if before is not None:
        found = list(session.exec(select(Device).where(col(Device.id) < before).order_by(col(Device.id).desc())
                                  .limit(MAX_DEVICES + 1)))  # fmt: skip
        devices = list(reversed(found[:MAX_DEVICES]))
        previous = devices[0].id if len(found) > MAX_DEVICES else None
        following = devices[-1].id if devices else None  # `before` itself follows
    else:
        query = select(Device).order_by(col(Device.id))
        found = list(session.exec((query if after is None else query.where(col(Device.id) > after))
                                  .limit(MAX_DEVICES + 1)))  # fmt: skip
        devices = found[:MAX_DEVICES]
        following = devices[-1].id if len(found) > MAX_DEVICES else None
        previous = (devices[0].id if devices else after) if after is not None else None
    since = now_ms() - FLEET_RECENT_MS
    counts = {d: (i, e) for d, i, e in session.exec(_recent_counts(since, [d.id for d in devices]))}
    recent = session.exec(
        select(TelemetryRecord).where(TelemetryRecord.window_end_ms >= since)
        .order_by(col(TelemetryRecord.window_end_ms).desc()).limit(FLEET_RECENT_ROWS)
    ).all()  # fmt: skip
    by_device: dict[str, list[TelemetryRecord]] = defaultdict(list)
    for row in reversed(recent):
        by_device[row.device_id].append(row)
    rows = []
    for device in devices:
        windows = by_device.get(device.id, [])  # the newest windows (fleet-wide cap): p95 and the trend
        inferences, errors = counts.get(device.id, (0, 0))  # every window of the quarter hour
        rate = errors / (inferences + errors) if inferences + errors else None
        _p50, p95 = latency_quantiles(windows) if windows else (None, None)
        rows.append({
            "device": device, "version": _version_of(device), "inferences": inferences, "error_rate": rate,
            "p95_ms": p95 / 1000 if p95 is not None else None, "health": health_of(device, rate),
            "trend": charts.sparkline([w.inference_count for w in windows[-30:]]),
            "hardware": device_facts.summary(device.facts), "spool": device_facts.spool_text(device.spool_dropped),
        })  # fmt: skip
    return {"rows": rows, "next_after": following, "previous_before": previous,
            "paged": after is not None or before is not None}


def device_page(session: Session, device_id: str) -> dict[str, Any]:
    device = session.get(Device, device_id)
    if device is None:
        raise NotFoundError(f"no device {device_id!r}")
    windows = list(reversed(session.exec(
        select(TelemetryRecord).where(TelemetryRecord.device_id == device_id)
        .order_by(col(TelemetryRecord.window_end_ms).desc()).limit(DEVICE_WINDOWS)
    ).all()))  # fmt: skip
    events = session.exec(
        select(EventRecord).where(EventRecord.device_id == device_id)
        .order_by(col(EventRecord.seq).desc()).limit(DEVICE_EVENTS)
    ).all()  # fmt: skip

    def series(name: str, values: list[float | None], color: str | None = None) -> charts.Series:
        return charts.Series(name, [(float(w.window_end_ms), v) for w, v in zip(windows, values, strict=True)], color)

    def per_second(w: TelemetryRecord) -> float | None:
        span = (w.window_end_ms - w.window_start_ms) / 1000
        return w.inference_count / span if span > 0 else None

    figures = {
        "throughput": charts.line_chart([series("inferences/s", [per_second(w) for w in windows])],
                                        title="Throughput", unit="/s"),
        "latency": charts.line_chart([series("p50", [w.latency_p50_us / 1000 for w in windows]),
                                      series("p95", [w.latency_p95_us / 1000 for w in windows], charts.PALETTE[1])],
                                     title="Latency", unit=" ms"),
        "errors": charts.line_chart([series("errors", [float(w.error_count) for w in windows], charts.PALETTE[1])],
                                    title="Errors per window"),
        "cpu": charts.line_chart([series("CPU", [w.cpu_percent for w in windows], charts.PALETTE[3])],
                                 title="CPU", unit="%"),
        "memory": charts.line_chart([series("RSS", [w.rss_bytes / 2**20 for w in windows], charts.PALETTE[2])],
                                    title="Memory (resident)", unit=" MiB"),
    }  # fmt: skip
    drift = None
    if windows:
        try:
            report = monitoring.device_drift(session, device_id, since_ms=windows[0].window_start_ms)
        except CloudError:
            report = None
        if report is not None:
            drift = {"report": report, "chart": _feature_psi_chart(report, "Input drift per feature (PSI)")}
    return {"device": device, "windows": windows, "events": events, "figures": figures, "drift": drift,
            "version": _version_of(device),
            "facts": device_facts.fact_rows(device.facts, device.spool_dropped)}  # fmt: skip


def _feature_psi_chart(report: monitoring.DriftReport, title: str) -> str:
    return charts.bar_chart([(f.name or f"f{f.index}", f.psi) for f in report.features], title=title,
                            threshold=PSI_HIGH, width=640, height=220)  # fmt: skip


def models_page(session: Session) -> dict[str, Any]:
    models = registry.list_models(session)
    return {"models": models}


def model_page(session: Session, model_id: str) -> dict[str, Any]:
    versions = list(session.exec(
        select(ModelVersion).where(ModelVersion.model_id == model_id)
        .order_by(col(ModelVersion.sequence).desc()).limit(MAX_VERSIONS)
    ))  # fmt: skip
    if not versions:
        raise NotFoundError(f"no model {model_id!r}")
    details = []
    for mv in versions:
        details.append({"mv": mv, "lineage": registry.lineage(session, mv.model_id, mv.version),
                        "artifacts": registry.artifacts_of(session, mv.id or 0)})  # fmt: skip
    oldest_first = list(reversed(versions))
    metrics_charts = [charts.line_chart(
        [charts.Series(name, [(float(mv.sequence), mv.metrics.get(name)) for mv in oldest_first])
         for name in names[:6]],
        title=title, time_axis=False, y_min=None,
    ) for title, names in _metrics_by_scale(versions)]  # fmt: skip
    running = Counter(
        d.active_version for d in session.exec(select(Device).where(Device.active_model_id == model_id).limit(5000))
    )
    return {"model_id": model_id, "versions": details, "metrics_charts": metrics_charts, "running": running}


def _metrics_by_scale(versions: list[ModelVersion]) -> list[tuple[str, list[str]]]:
    """Scores (every value within 0..1: accuracy, F1) and other figures (row counts, losses) get a chart
    each: on one axis a count of 540 flattens an accuracy of 0.97 against 0.98 into the same line at 0."""
    names = sorted({k for mv in versions for k, v in mv.metrics.items() if isinstance(v, int | float)})

    def score(name: str) -> bool:
        values = [mv.metrics[name] for mv in versions if isinstance(mv.metrics.get(name), int | float)]
        return all(0.0 <= v <= 1.0 for v in values)

    scores, others = [n for n in names if score(n)], [n for n in names if not score(n)]
    return [(title, group) for title, group in (("Scores by version (sequence)", scores),
                                                ("Other figures by version (sequence)", others)) if group]  # fmt: skip


def drift_page(session: Session, model_id: str, version: str, hours: float) -> dict[str, Any]:
    since = now_ms() - int(hours * 3_600_000)
    wanted = None if version == "latest" else version  # as the API reads it
    report = monitoring.fleet_drift(session, model_id, wanted, since_ms=since)  # NotFoundError: unknown version
    devices = sorted(report.devices, key=lambda d: -(d.max_psi or 0))[:DRIFT_HEAT_DEVICES]
    names = [f.name or f"f{f.index}" for f in report.features]
    grid: list[list[float | None]] = []
    for line in devices:
        per_device = monitoring.device_drift(session, line.device_id, model_id=report.model_id,
                                             version=report.version, since_ms=since)  # fmt: skip
        psi = {f.index: f.psi for f in per_device.features}
        grid.append([psi.get(f.index) for f in report.features])
    heat = charts.heat_map([d.device_id for d in devices], names, grid, high=PSI_HIGH,
                           title="PSI per device and feature")  # fmt: skip
    accuracy = feedback.field_accuracy(session, report.model_id, report.version, by="device", since_ms=since)
    return {
        "report": report, "hours": hours, "heat_map": heat, "accuracy": accuracy,
        "feature_chart": _feature_psi_chart(report, "Fleet input drift per feature (PSI)"),
        "device_chart": charts.bar_chart([(d.device_id, d.max_psi) for d in devices], threshold=PSI_HIGH,
                                         title="Largest feature PSI per device", height=220),
    }  # fmt: skip


def rollouts_page(session: Session) -> dict[str, Any]:
    from cloud.api.routes.rollouts import view

    rows = session.exec(select(Rollout).order_by(col(Rollout.created_at_ms).desc()).limit(MAX_ROLLOUTS))
    return {"rollouts": [view(session, r) for r in rows], "models": registry.list_models(session)}


def rollout_page(session: Session, deployment_id: str) -> dict[str, Any]:
    from cloud.api.routes.rollouts import view

    rollout = session.get(Rollout, deployment_id)
    if rollout is None:
        raise NotFoundError(f"no staged rollout {deployment_id!r}")
    deployment = session.get(Deployment, deployment_id)
    summary = view(session, rollout)
    shown = [wave[:WAVE_SHOWN] for wave in rollout.waves]  # the tiles count all (`view`); the page names a few
    named = [d for wave in shown for d in wave]
    statuses: dict[str, str] = {}
    for start in range(0, len(named), 500):  # ids per IN (...) list
        query = select(DeploymentTarget.device_id, DeploymentTarget.status).where(
            DeploymentTarget.deployment_id == deployment_id,
            col(DeploymentTarget.device_id).in_(named[start : start + 500]))  # fmt: skip
        statuses.update(session.exec(query).all())
    waves = []
    for i, wave in enumerate(rollout.waves):
        stage = wave_stage(rollout.state, i, rollout.current_wave)
        waves.append({"number": i + 1, "stage": stage, "size": len(wave),
                      "devices": [(d, statuses.get(d, "")) for d in shown[i]]})  # fmt: skip
    samples = list(reversed(session.exec(
        select(RolloutGateSample).where(RolloutGateSample.deployment_id == deployment_id)
        .order_by(col(RolloutGateSample.id).desc()).limit(GATE_SAMPLES)
    ).all()))  # fmt: skip
    decisions = list(reversed(session.exec(
        select(RolloutDecision).where(RolloutDecision.deployment_id == deployment_id)
        .order_by(col(RolloutDecision.id).desc()).limit(DECISIONS)
    ).all()))  # fmt: skip
    markers = [charts.Marker(float(d.at_ms), f"{d.action} (wave {d.wave + 1}) by {d.actor}") for d in decisions]
    gate_names = list(dict.fromkeys(name for s in samples for name in s.values))
    gate_charts = []
    for name in gate_names:
        field, _floor = GATE_LIMITS.get(name, ("", False))
        limit = rollout.gates.get(field)
        threshold = float(limit) if isinstance(limit, int | float) else None
        points = [(float(s.at_ms), s.values.get(name)) for s in samples]
        gate_charts.append(charts.line_chart([charts.Series(name, points)], title=f"Gate: {name}",
                                             threshold=threshold, markers=markers, width=560, height=190))  # fmt: skip
    verdict_gates = rollout.last_verdict.get("gates", []) if isinstance(rollout.last_verdict, dict) else []
    return {
        "rollout": rollout, "summary": summary, "deployment": deployment, "waves": waves, "decisions": decisions,
        "gate_charts": gate_charts, "samples": len(samples), "verdict_gates": verdict_gates,
        "actions": ACTIONS_BY_STATE.get(rollout.state, ()),
        "decision_rows": [(d, decision_text(d.detail)) for d in decisions],
    }  # fmt: skip


def wave_stage(state: str, index: int, current: int) -> str:
    """A wave's place in its rollout. The current wave is "open" only while the rollout runs: paused, it
    waits; rolled back or cancelled, it is stopped (not left "open" under a rollout that is over)."""
    if index < current or (index == current and state == "completed"):
        return "done"
    if index > current:
        return "pending"
    return {"running": "open", "paused": "paused"}.get(state, "stopped")


def decision_text(detail: object) -> str:
    """A decision's detail in words: which gates breached or still wait (with why), what a rollback
    restored; the raw JSON (a verdict is a dozen nested figures) cut at 160 characters told nobody anything."""
    if not isinstance(detail, dict) or not detail:
        return ""
    nested = detail.get("verdict")
    verdict: dict[str, Any] = nested if isinstance(nested, dict) else detail
    if isinstance(verdict.get("gates"), list):
        decision = str(verdict.get("decision", ""))
        gates = [g for g in verdict["gates"] if isinstance(g, dict)]
        named = [g for g in gates if g.get("decision") in ("breach", "wait")]
        if not named:
            return f"{decision}: all {len(gates)} gates pass"
        why = (f"{g.get('gate')} {g.get('decision')} ({g.get('detail', '')})" for g in named)
        return f"{decision}: " + "; ".join(why)
    if isinstance(detail.get("restored"), dict):
        restored = ", ".join(f"{version} on {n} device(s)" for version, n in detail["restored"].items()) or "nothing"
        kept = detail.get("kept_new_model") or 0
        kept_text = f"; {kept} device(s) had no earlier model and keep the new one" if kept else ""
        return f"restored {restored}{kept_text}"
    if "devices" in detail:
        return f"{detail['devices']} device(s)"
    text = ", ".join(f"{k}: {v}" for k, v in detail.items())
    return text if len(text) <= 160 else text[:159] + "…"


def deployments_page(session: Session) -> dict[str, Any]:
    """The newest deployments, plain and staged, each with its targets counted by status (one grouped query)."""
    rows = list(session.exec(select(Deployment).order_by(col(Deployment.created_at_ms).desc()).limit(MAX_DEPLOYMENTS)))
    ids = [d.id for d in rows]
    counts = target_counts(session, ids)
    staged = set(session.exec(select(Rollout.deployment_id).where(col(Rollout.deployment_id).in_(ids))))
    return {"deployments": [{"deployment": d, "counts": counts[d.id], "targets": sum(counts[d.id].values()),
                             "staged": d.id in staged} for d in rows]}  # fmt: skip


def deployment_page(session: Session, deployment_id: str, after: str | None = None) -> dict[str, Any]:
    """One deployment: its targets counted by status (all of them), why it waits when it does, and a page
    of MAX_TARGETS targets in device id order after `after` (keyset, as the fleet page)."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        raise NotFoundError(f"no deployment {deployment_id!r}")
    counts = target_counts(session, [deployment_id])[deployment_id]
    page = targets_of(session, deployment_id, after=after, limit=MAX_TARGETS + 1)
    return {
        "deployment": deployment, "targets": page[:MAX_TARGETS], "counts": counts, "total": sum(counts.values()),
        "next_after": page[MAX_TARGETS - 1].device_id if len(page) > MAX_TARGETS else None, "paged": after is not None,
        "waiting": waiting_reason(session, deployment, counts),
        "staged": session.get(Rollout, deployment_id) is not None,
    }  # fmt: skip


def audit_page(session: Session) -> dict[str, Any]:
    return {"entries": audit.entries(session, limit=200)}
