"""GET /metrics: the Prometheus text format, from `cloud.monitoring.metrics.FleetCollector` at scrape time."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cloud.api.auth import ScrapeAuthorize
from cloud.api.deps import AppServices
from cloud.monitoring.metrics import FleetCollector, metrics_registry
from cloud.settings import CloudSettings

router = APIRouter(tags=["metrics"], dependencies=[Depends(ScrapeAuthorize())])


def registry_for(settings: CloudSettings, services: AppServices) -> CollectorRegistry:
    # ingestion counters are the ones /healthz shows under "ingest" (absent in an app without an ingestor)
    collector = FleetCollector(
        services.engine, ingest=services.probes.get("ingest"), max_versions=settings.metrics_max_model_versions,
        lookback_s=settings.metrics_telemetry_lookback_s,
    )  # fmt: skip
    return metrics_registry(collector)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics of the fleet, rollouts and ingestion")
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
