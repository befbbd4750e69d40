"""A model's figures on a set of devices over a period, read from stored telemetry windows, for the gates.

One query per arm, bounded by the devices and the period; latency quantiles come from the windows' merged
histograms when they share bounds (cloud.monitoring.summaries.latency_quantiles), predictions are summed
per label, and the on-device shadow comparisons (devices on probation) are summed for `shadow_agreement`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

from sqlmodel import Session, col, select

from cloud.db.tables import TelemetryRecord
from cloud.monitoring.summaries import latency_quantiles
from cloud.rollout.gates import ArmFigures


def arm_figures(rows: Sequence[TelemetryRecord]) -> ArmFigures:
    predictions: Counter[str] = Counter()
    for row in rows:
        counts = row.prediction_counts
        keys = counts.get("labels") or [f"bin{i}" for i in range(len(counts.get("counts", [])))]
        for key, count in zip(keys, counts.get("counts", []), strict=False):
            predictions[str(key)] += int(count)
    _, p95 = latency_quantiles(rows) if rows else (None, None)
    return ArmFigures(
        devices=len({r.device_id for r in rows}),
        inferences=sum(r.inference_count for r in rows),
        errors=sum(r.error_count for r in rows),
        p95_latency_us=p95,
        predictions=dict(predictions),
        shadow_compared=sum(r.shadow_compared for r in rows),
        shadow_agreed=sum(r.shadow_agreed for r in rows),
    )


def figures_for(
    session: Session, device_ids: Collection[str], model_id: str, version: str, *, since_ms: int,
    until_ms: int | None = None,
) -> ArmFigures:  # fmt: skip
    """model_id@version's figures on device_ids from windows ending in [since_ms, until_ms)."""
    if not device_ids:
        return ArmFigures()
    query = select(TelemetryRecord).where(
        col(TelemetryRecord.device_id).in_(list(device_ids)),
        TelemetryRecord.model_id == model_id,
        TelemetryRecord.model_version == version,
        col(TelemetryRecord.window_end_ms) >= since_ms,
    )
    if until_ms is not None:
        query = query.where(col(TelemetryRecord.window_end_ms) < until_ms)
    return arm_figures(list(session.exec(query)))
