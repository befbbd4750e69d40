"""Monitoring: what devices send, stored and read back. `ingest` turns device->cloud messages into rows
(idempotently, in batches); `summaries` reads telemetry back as per-device summaries and drift reports;
`stats` holds the pure two-sample statistics (chi-square/G, binned KS, PSI, JS distance, BH/BY), `detector`
the alert rule over one false-discovery family, `drift` the per-feature views reports show;
`metrics` reads fleet, rollout, telemetry and ingestion figures for Prometheus (GET /metrics) at scrape time;
`hints` sends the devices a drift alert names signed sampler hints of the bins their drift fills.
"""

from cloud.monitoring.detector import Attribution, DeviceAttribution, DriftPolicy
from cloud.monitoring.ingest import Ingestor, IngestStats, decode
from cloud.monitoring.summaries import (
    DeviceDriftLine,
    DriftReport,
    TelemetrySummary,
    device_drift,
    drift_report,
    fleet_drift,
    histogram_quantile,
    telemetry_summary,
)

__all__ = [
    "Attribution",
    "DeviceAttribution",
    "DeviceDriftLine",
    "DriftPolicy",
    "DriftReport",
    "IngestStats",
    "Ingestor",
    "TelemetrySummary",
    "decode",
    "device_drift",
    "drift_report",
    "fleet_drift",
    "histogram_quantile",
    "telemetry_summary",
]
