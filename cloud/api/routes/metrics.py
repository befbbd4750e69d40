"""GET /metrics: the Prometheus text format, from `cloud.monitoring.metrics.FleetCollector` at scrape time."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud.api.auth import ScrapeAuthorize
from cloud.api.deps import ServicesDep, SessionDep
from cloud.monitoring.metrics import FleetCollector, metrics_registry
from cloud.settings import CloudSettings

router = APIRouter(tags=["metrics"], dependencies=[Depends(ScrapeAuthorize())])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics of the fleet, rollouts and ingestion")
def metrics(request: Request, session: SessionDep, services: ServicesDep) -> Response:
    settings: CloudSettings = request.app.state.settings
    collector = FleetCollector(
        session,
        # the ingestion counters /healthz shows (absent in an app that runs no ingestor)
        ingest=services.probes.get("ingest"),
        max_versions=settings.metrics_max_model_versions,
        lookback_s=settings.metrics_telemetry_lookback_s,
        alert_counters=services.probes.get("alerts"),
        max_alert_devices=settings.metrics_max_alert_devices,
    )
    return Response(generate_latest(metrics_registry(collector)), media_type=CONTENT_TYPE_LATEST)
