"""Monitoring: what devices send, stored and read back. `ingest` turns device->cloud messages into rows
(idempotently, in batches); `summaries` reads telemetry back as per-device summaries and drift reports;
`drift` holds the pure drift statistics they use (PSI, JS distance, chi-square, Benjamini-Hochberg);
`metrics` reads fleet, rollout, telemetry and ingestion figures for Prometheus (GET /metrics) at scrape time.
"""

from cloud.monitoring.ingest import Ingestor, IngestStats, decode
from cloud.monitoring.summaries import (
    DeviceDriftLine,
    DriftReport,
    TelemetrySummary,
    device_drift,
    fleet_drift,
    histogram_quantile,
    telemetry_summary,
)

__all__ = [
    "DeviceDriftLine",
    "DriftReport",
    "IngestStats",
    "Ingestor",
    "TelemetrySummary",
    "decode",
    "device_drift",
    "fleet_drift",
    "histogram_quantile",
    "telemetry_summary",
]
