"""Prometheus figures of the fleet, read from the database when scraped (GET /metrics).

One custom Collector instead of instrumenting every code path: the database already holds the truth
(devices, deployments, telemetry), and several cloud workers share it, so each answers the same fleet
figures. Only the ingestion counters are per process (each worker counts what it ingested; Prometheus
sums them across targets and handles restarts as counter resets).

Every scrape is a handful of GROUP BY queries, and label values are bounded: update states and statuses
come from enums (anything else is "other"), and model versions keep their own series only for the
`max_versions` most common ones; the rest add up under model_id="other", version="other". Per-model
telemetry covers windows the cloud received in the last `lookback_s` seconds, among at most the
`MAX_RECENT_WINDOWS` newest rows (a primary-key range, so the query stays cheap however big the table grows).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from cloud.db.statuses import DeploymentStatus, RolloutState, TargetStatus
from cloud.db.tables import AlertRecord, Deployment, DeploymentTarget, Device, TelemetryRecord
from cloud.rollout.records import Rollout
from cloud.types import now_ms
from protocols.v1 import messages_pb2 as pb

OTHER = "other"
NONE = "none"  # the model label of a device that runs no model
MAX_RECENT_WINDOWS = 200_000
UPDATE_STATES = ["unknown", *(n.removeprefix("UPDATE_STATE_").lower() for n in pb.UpdateState.keys()[1:])]
REFUSAL_REASONS = ("malformed", "foreign", "unenrolled", "implausible", "failed")  # IngestStats fields

IngestCounters = Callable[[], dict[str, int] | None]
ALERT_KINDS = ("drift", "accuracy")  # cloud.monitoring.alerts.KINDS
WEBHOOK_OUTCOMES = ("queued", "delivered", "retried", "failed", "dropped")  # WebhookStats fields


@dataclass
class ModelFigures:
    windows: int = 0
    inferences: int = 0
    errors: int = 0
    p95_weighted_us: float = 0.0  # sum of window p95 x inferences, divided out at the end
    p95_max_us: float = 0.0

    def add(self, other: ModelFigures) -> None:
        self.windows += other.windows
        self.inferences += other.inferences
        self.errors += other.errors
        self.p95_weighted_us += other.p95_weighted_us
        self.p95_max_us = max(self.p95_max_us, other.p95_max_us)


def bounded(counts: dict[tuple[str, str], float], limit: int) -> dict[tuple[str, str], float]:
    """The `limit` largest entries (ties broken by name, so series do not flap), the rest summed as other."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[:limit])
    rest = ranked[limit:]
    if rest:
        kept[(OTHER, OTHER)] = kept.get((OTHER, OTHER), 0) + sum(v for _, v in rest)
    return kept


def _by_enum(rows: Iterable[tuple[str | None, int]], known: Iterable[str]) -> dict[str, float]:
    counts = dict.fromkeys(known, 0.0)  # every known value present, at 0: dashboards show no gaps
    for value, n in rows:
        key = value if value in counts else OTHER
        counts[key] = counts.get(key, 0) + n
    return counts


class FleetCollector(Collector):
    """Reads through the session it is given: the request's own, since on SQLite every transaction holds the
    write lock (cloud.db.engine), so a second session in the same request would wait for the first."""

    def __init__(
        self, session: Session, *, ingest: IngestCounters | None = None, max_versions: int = 20, lookback_s: int = 300,
        alert_counters: IngestCounters | None = None, max_alert_devices: int = 20,
    ) -> None:  # fmt: skip
        self.session = session
        self.ingest = ingest
        self.alert_counters = alert_counters
        self.max_alert_devices = max_alert_devices
        self.max_versions = max_versions
        self.lookback_s = lookback_s

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check at registration; collect() needs the database

    def collect(self) -> Iterator[Metric]:
        yield from self._fleet(self.session)
        yield from self._rollout(self.session)
        yield from self._models(self.session)
        yield from self._ingestion()
        yield from self._alerts(self.session)

    def _fleet(self, session: Session) -> Iterator[Metric]:
        total, online = session.exec(
            select(func.count(), func.coalesce(func.sum(case((col(Device.online), 1), else_=0)), 0))
        ).one()
        yield GaugeMetricFamily("edgefleet_devices", "Devices known to the cloud.", value=total)
        yield GaugeMetricFamily("edgefleet_devices_online", "Devices whose last presence said online.", value=online)
        states = session.exec(select(Device.update_state, func.count()).group_by(col(Device.update_state))).all()
        family = GaugeMetricFamily("edgefleet_devices_by_update_state", "Devices by reported update state.",
                                   labels=["state"])
        for state, n in _by_enum(states, UPDATE_STATES).items():
            family.add_metric([state], n)
        yield family
        rows = session.exec(
            select(Device.active_model_id, Device.active_version, func.count())
            .group_by(col(Device.active_model_id), col(Device.active_version))
        ).all()  # fmt: skip
        versions = {(model_id or NONE, version or NONE): float(n) for model_id, version, n in rows}
        family = GaugeMetricFamily("edgefleet_devices_by_model_version", "Devices by active model version "
                                   "(the most common ones; the rest as other).", labels=["model_id", "version"])
        for (model_id, version), n in bounded(versions, self.max_versions).items():
            family.add_metric([model_id, version], n)
        yield family

    def _rollout(self, session: Session) -> Iterator[Metric]:
        deployments = session.exec(select(Deployment.status, func.count()).group_by(col(Deployment.status))).all()
        family = GaugeMetricFamily("edgefleet_deployments", "Deployments by status.", labels=["status"])
        for status, n in _by_enum(deployments, list(DeploymentStatus)).items():
            family.add_metric([status], n)
        yield family
        targets = session.exec(
            select(DeploymentTarget.status, func.count()).group_by(col(DeploymentTarget.status))
        ).all()
        family = GaugeMetricFamily("edgefleet_deployment_targets", "Deployment targets (one device in one "
                                   "deployment) by status.", labels=["status"])
        for status, n in _by_enum(targets, list(TargetStatus)).items():
            family.add_metric([status], n)
        yield family
        rollouts = session.exec(select(Rollout.state, func.count()).group_by(col(Rollout.state))).all()
        family = GaugeMetricFamily("edgefleet_rollouts", "Staged rollouts by state.", labels=["state"])
        for state, n in _by_enum(rollouts, list(RolloutState)).items():
            family.add_metric([state], n)
        yield family

    def _recent_models(self, session: Session) -> dict[tuple[str, str], ModelFigures]:
        newest = session.exec(select(func.max(TelemetryRecord.id))).one() or 0
        t = TelemetryRecord
        rows = session.execute(  # sqlalchemy's select: sqlmodel's types at most 4 columns
            sa_select(col(t.model_id), col(t.model_version), func.count(), func.sum(t.inference_count),
                      func.sum(t.error_count), func.sum(col(t.latency_p95_us) * col(t.inference_count)),
                      func.max(t.latency_p95_us))
            .where(col(t.id) > newest - MAX_RECENT_WINDOWS)
            .where(col(t.received_at_ms) >= now_ms() - self.lookback_s * 1000)
            .group_by(col(t.model_id), col(t.model_version))
        ).all()  # fmt: skip
        figures = {
            (model_id or NONE, version or NONE): ModelFigures(n, int(inf or 0), int(err or 0), float(p95w or 0),
                                                              float(p95max or 0))
            for model_id, version, n, inf, err, p95w, p95max in rows
        }  # fmt: skip
        kept = bounded({key: float(f.inferences) for key, f in figures.items()}, self.max_versions)
        merged: dict[tuple[str, str], ModelFigures] = {}
        for key, f in figures.items():
            merged.setdefault(key if key in kept else (OTHER, OTHER), ModelFigures()).add(f)
        return merged

    def _models(self, session: Session) -> Iterator[Metric]:
        yield GaugeMetricFamily("edgefleet_telemetry_lookback_seconds", "How far back the edgefleet_model_* "
                                "figures look (by the cloud's receipt time).", value=self.lookback_s)
        labels = ["model_id", "version"]
        windows = GaugeMetricFamily("edgefleet_model_recent_windows", "Telemetry windows received lately.",
                                    labels=labels)
        inferences = GaugeMetricFamily("edgefleet_model_recent_inferences", "Inferences in those windows.",
                                       labels=labels)
        errors = GaugeMetricFamily("edgefleet_model_recent_errors", "Inference errors in those windows.",
                                   labels=labels)
        p95 = GaugeMetricFamily("edgefleet_model_latency_p95_seconds", "Latency p95 of those windows, their own "
                                "p95s weighted by inferences.", labels=labels)
        p95_max = GaugeMetricFamily("edgefleet_model_latency_p95_max_seconds", "The highest latency p95 of one "
                                    "window among them (the worst device).", labels=labels)
        for (model_id, version), f in self._recent_models(session).items():
            key = [model_id, version]
            windows.add_metric(key, f.windows)
            inferences.add_metric(key, f.inferences)
            errors.add_metric(key, f.errors)
            if f.inferences:
                p95.add_metric(key, f.p95_weighted_us / f.inferences / 1e6)
            p95_max.add_metric(key, f.p95_max_us / 1e6)
        yield from (windows, inferences, errors, p95, p95_max)

    def _ingestion(self) -> Iterator[Metric]:
        counts = self.ingest() if self.ingest is not None else None
        if counts is None:
            return  # this process does not ingest (an API-only app)
        yield CounterMetricFamily("edgefleet_ingest_messages_received", "Device messages this process took "
                                  "off MQTT.", value=counts.get("received", 0))
        yield CounterMetricFamily("edgefleet_ingest_messages_accepted", "Messages of enrolled devices stored or "
                                  "applied.", value=counts.get("accepted", 0))
        refused = CounterMetricFamily("edgefleet_ingest_messages_refused", "Messages dropped, by reason.",
                                      labels=["reason"])
        for reason in REFUSAL_REASONS:
            refused.add_metric([reason], counts.get(reason, 0))
        yield refused
        yield CounterMetricFamily("edgefleet_ingest_rows_stored", "Telemetry, event and sample rows inserted.",
                                  value=counts.get("stored", 0))
        yield CounterMetricFamily("edgefleet_ingest_rows_duplicate", "Rows skipped as redeliveries.",
                                  value=counts.get("duplicates", 0))


    def _alerts(self, session: Session) -> Iterator[Metric]:
        """Active alerts (every worker reads the same rows): counts per kind, one series per alerting model
        version (bounded like the others) and per named device (at most max_alert_devices, the devices named
        by the most alerts; the rest summed as other)."""
        rows = session.exec(select(AlertRecord).where(col(AlertRecord.active).is_(True))).all()
        family = GaugeMetricFamily("edgefleet_alerts_active", "Active alerts, by kind.", labels=["kind"])
        for kind, n in _by_enum([(r.kind, 1) for r in rows], ALERT_KINDS).items():
            family.add_metric([kind], n)
        yield family
        per_version = GaugeMetricFamily("edgefleet_alert_active", "1 for each model version with an active alert "
                                        "of this kind (the most recent ones; the rest add up as other).",
                                        labels=["kind", "model_id", "version"])  # fmt: skip
        for kind in ALERT_KINDS:
            mine = {(r.model_id, r.model_version): 1.0 for r in rows if r.kind == kind}
            for (model_id, version), n in bounded(mine, self.max_versions).items():
                per_version.add_metric([kind, model_id, version], n)
        yield per_version
        named: dict[tuple[str, str], float] = {}
        for r in rows:
            for device in r.devices:
                named[(r.kind, device)] = named.get((r.kind, device), 0.0) + 1.0
        devices = GaugeMetricFamily("edgefleet_alert_devices", "Active alerts naming a device as a driver (at most "
                                    "the cap's devices by name; the rest as other).", labels=["kind", "device_id"])
        ranked = sorted(named.items(), key=lambda kv: (-kv[1], kv[0]))
        rest: dict[str, float] = {}
        for (kind, device), n in ranked[: self.max_alert_devices]:
            devices.add_metric([kind, device], n)
        for (kind, _), n in ranked[self.max_alert_devices :]:
            rest[kind] = rest.get(kind, 0.0) + n
        for kind, n in rest.items():
            devices.add_metric([kind, OTHER], n)
        yield devices
        counts = self.alert_counters() if self.alert_counters is not None else None
        if counts is None:
            return  # this process runs no alert monitor
        transitions = CounterMetricFamily("edgefleet_alert_transitions", "Alerts this process raised or cleared.",
                                          labels=["event"])  # fmt: skip
        for event in ("raised", "cleared"):
            transitions.add_metric([event], counts.get(event, 0))
        yield transitions
        yield CounterMetricFamily("edgefleet_alert_evaluations", "Alert evaluations this process ran.",
                                  value=counts.get("evaluations", 0))  # fmt: skip
        restarts = counts.get("process_restarts", 0)
        yield CounterMetricFamily("edgefleet_alert_process_restarts", "Alert evaluation processes this process "
                                  "started again after one ended.", value=restarts)  # fmt: skip
        webhook = CounterMetricFamily("edgefleet_alert_webhook_events", "Alert webhook events of this process, by "
                                      "outcome.", labels=["outcome"])  # fmt: skip
        for outcome in WEBHOOK_OUTCOMES:
            webhook.add_metric([outcome], counts.get(f"webhook_{outcome}", 0))
        yield webhook


def metrics_registry(collector: Collector) -> CollectorRegistry:
    """A registry of its own per scrape (not the global one): nothing is kept between scrapes but the
    database and the ingestor's counters, and two apps in one process do not collide."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
