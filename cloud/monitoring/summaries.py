"""Telemetry read-outs: per-device summaries and drift reports, per device and fleet-wide.

Reads TelemetryRecord rows, merges their sketches (counts add up) and hands them to the pure statistics
in `cloud.monitoring.drift`, comparing against the reference profile embedded in the model version's manifest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from cloud import registry
from cloud.db.tables import TelemetryRecord
from cloud.errors import NotFoundError
from cloud.monitoring import drift
from protocols.v1 import messages_pb2 as pb


def histogram_quantile(bounds: Sequence[float], counts: Sequence[float], q: float) -> float | None:
    """Quantile q of a histogram with upper `bounds` (+1 open-ended bucket), linear within a bucket.
    Values in the open bucket are reported as the last bound (a lower bound on the truth)."""
    total = float(sum(counts))
    if total <= 0 or len(counts) != len(bounds) + 1:
        return None
    rank = q * total
    seen = 0.0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i == len(bounds):
                return float(bounds[-1]) if bounds else None
            lower = float(bounds[i - 1]) if i > 0 else 0.0
            return lower + (float(bounds[i]) - lower) * (rank - seen) / count
        seen += count
    return float(bounds[-1]) if bounds else None


@dataclass(frozen=True)
class TelemetrySummary:
    device_id: str
    windows: int
    first_window_start_ms: int | None
    last_window_end_ms: int | None
    inference_count: int
    error_count: int
    error_rate: float | None
    latency_p50_us: float | None
    latency_p95_us: float | None
    labelled_count: int
    correct_count: int
    accuracy: float | None  # correct / labelled, None until some inference got its true label
    models: list[str] = field(default_factory=list)  # "model_id@version" seen in these windows


def _windows(
    session: Session, *, device_id: str | None = None, model_id: str | None = None, version: str | None = None,
    since_ms: int | None = None,
) -> list[TelemetryRecord]:  # fmt: skip
    query = select(TelemetryRecord).order_by(col(TelemetryRecord.window_end_ms))
    if device_id is not None:
        query = query.where(TelemetryRecord.device_id == device_id)
    if model_id is not None:
        query = query.where(TelemetryRecord.model_id == model_id)
    if version is not None:
        query = query.where(TelemetryRecord.model_version == version)
    if since_ms is not None:
        query = query.where(TelemetryRecord.window_end_ms >= since_ms)
    return list(session.exec(query))


def latency_quantiles(rows: Sequence[TelemetryRecord]) -> tuple[float | None, float | None]:
    hists = [r.latency_histogram for r in rows if r.latency_histogram.get("counts")]
    bounds = {tuple(h.get("bounds", [])) for h in hists}
    if hists and len(hists) == len(rows) and len(bounds) == 1:
        merged = [sum(c) for c in zip(*(h["counts"] for h in hists), strict=True)]
        b = list(next(iter(bounds)))
        return histogram_quantile(b, merged, 0.5), histogram_quantile(b, merged, 0.95)
    weight = sum(r.inference_count for r in rows)
    if weight == 0:
        return None, None
    # no common histogram: inference-weighted mean of the windows' own quantiles (an approximation)
    p50 = sum(r.latency_p50_us * r.inference_count for r in rows) / weight
    p95 = sum(r.latency_p95_us * r.inference_count for r in rows) / weight
    return p50, p95


def telemetry_summary(session: Session, device_id: str, *, since_ms: int | None = None) -> TelemetrySummary:
    rows = _windows(session, device_id=device_id, since_ms=since_ms)
    inferences = sum(r.inference_count for r in rows)
    errors = sum(r.error_count for r in rows)
    labelled = sum(r.labelled_count for r in rows)
    correct = sum(r.correct_count for r in rows)
    p50, p95 = latency_quantiles(rows)
    models = list(dict.fromkeys(f"{r.model_id}@{r.model_version}" for r in rows if r.model_id))
    return TelemetrySummary(
        device_id=device_id,
        windows=len(rows),
        first_window_start_ms=min((r.window_start_ms for r in rows), default=None),
        last_window_end_ms=max((r.window_end_ms for r in rows), default=None),
        inference_count=inferences,
        error_count=errors,
        error_rate=errors / (inferences + errors) if inferences + errors else None,
        latency_p50_us=p50,
        latency_p95_us=p95,
        labelled_count=labelled,
        correct_count=correct,
        accuracy=correct / labelled if labelled else None,
        models=models,
    )


@dataclass(frozen=True)
class DeviceDriftLine:
    device_id: str
    n_observed: int
    max_psi: float | None
    drifted_features: list[int]


@dataclass(frozen=True)
class DriftReport:
    model_id: str
    version: str
    device_id: str | None  # None: fleet-wide
    windows: int
    features: list[drift.FeatureDrift]
    predictions: drift.PredictionDrift
    ignored_sketches: int = 0  # feature sketches whose bins do not match the reference profile
    devices: list[DeviceDriftLine] = field(default_factory=list)  # fleet-wide reports: one line per device


def _reference(profile: pb.ReferenceProfile) -> list[drift.ReferenceFeature]:
    return [drift.ReferenceFeature(f.index, f.name, list(f.counts)) for f in profile.features]


def _prediction_drift(profile: pb.PredictionProfile, rows: Sequence[TelemetryRecord]) -> drift.PredictionDrift:
    if profile.labels:
        observed: dict[str, float] = defaultdict(float)
        for r in rows:
            p = r.prediction_counts
            for label, count in zip(p.get("labels", []), p.get("counts", []), strict=False):
                observed[label] += count
        labels, counts = list(observed), list(observed.values())
        ref, obs = drift.align_labelled(list(profile.labels), list(profile.counts), labels, counts)
        return drift.prediction_drift(ref, obs)
    binned = [r.prediction_counts.get("counts", []) for r in rows]
    binned = [c for c in binned if len(c) == len(profile.counts)]
    obs_bins = [sum(c) for c in zip(*binned, strict=True)] if binned else []
    return drift.prediction_drift(list(profile.counts), obs_bins)


def _report(
    profile: pb.ReferenceProfile, rows: Sequence[TelemetryRecord], model_id: str, version: str, device_id: str | None
) -> DriftReport:
    reference = _reference(profile)
    bins = {f.index: len(f.counts) for f in reference}
    sketches: list[dict[int, list[int]]] = []
    ignored = 0
    for r in rows:
        sketch = {}
        for key, counts in r.feature_counts.items():
            # a sketch over other bins than the reference's (a buggy or mismatched agent) cannot be compared
            if key.isdigit() and bins.get(int(key)) == len(counts):
                sketch[int(key)] = counts
            else:
                ignored += 1
        sketches.append(sketch)
    return DriftReport(
        model_id=model_id,
        version=version,
        device_id=device_id,
        windows=len(rows),
        features=drift.feature_drift(reference, drift.merge_counts(sketches)),
        predictions=_prediction_drift(profile.predictions, rows),
        ignored_sketches=ignored,
    )


def device_drift(
    session: Session, device_id: str, *, model_id: str | None = None, version: str | None = None,
    since_ms: int | None = None,
) -> DriftReport:  # fmt: skip
    """Drift of one device's inputs for a model version (default: the model of its latest window)."""
    if model_id is None:
        latest = _windows(session, device_id=device_id, since_ms=since_ms)
        with_model = [r for r in latest if r.model_id]
        if not with_model:
            raise NotFoundError(f"no telemetry with a model from device {device_id}")
        model_id, version = with_model[-1].model_id, with_model[-1].model_version
    mv = registry.get_model_version(session, model_id, version)
    rows = _windows(session, device_id=device_id, model_id=mv.model_id, version=mv.version, since_ms=since_ms)
    return _report(registry.manifest_of(mv).reference, rows, mv.model_id, mv.version, device_id)


def fleet_drift(
    session: Session, model_id: str, version: str | None = None, *, since_ms: int | None = None
) -> DriftReport:
    """Drift of every device's inputs merged, plus a line per device, for one model version."""
    mv = registry.get_model_version(session, model_id, version)
    profile = registry.manifest_of(mv).reference
    rows = _windows(session, model_id=mv.model_id, version=mv.version, since_ms=since_ms)
    report = _report(profile, rows, mv.model_id, mv.version, None)
    by_device: dict[str, list[TelemetryRecord]] = defaultdict(list)
    for r in rows:
        by_device[r.device_id].append(r)
    for device_id, device_rows in sorted(by_device.items()):
        features = _report(profile, device_rows, mv.model_id, mv.version, device_id).features
        values = [f.psi for f in features if f.psi is not None]
        report.devices.append(
            DeviceDriftLine(
                device_id=device_id,
                n_observed=max((f.n_observed for f in features), default=0),
                max_psi=max(values) if values else None,
                drifted_features=[f.index for f in features if f.drifted],
            )
        )
    return report
