"""Telemetry read-outs: per-device summaries and drift reports, per device and fleet-wide.

Reads TelemetryRecord rows and turns their sketches into samples for `cloud.monitoring.detector`: each
window, each device's sum over its windows and, fleet-wide, the fleet's sum (counts add up), all compared
with the reference profile embedded in the model version's manifest, in one false-discovery family. The
model's outputs are tested alongside the inputs: the prediction histogram and, for classifiers whose
manifest has a confidence reference, the histogram of the top-class probability; for a multilabel model,
each label's rows off and on (its positive rate), one test per label.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlmodel import Session, col, select

from cloud import registry
from cloud.db.tables import TelemetryRecord
from cloud.errors import NotFoundError
from cloud.monitoring import detector, drift
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


class LatencyWindow(Protocol):
    """What latency_quantiles reads of a telemetry window."""

    @property
    def latency_histogram(self) -> dict[str, list[float]]: ...
    @property
    def inference_count(self) -> int: ...
    @property
    def latency_p50_us(self) -> float: ...
    @property
    def latency_p95_us(self) -> float: ...


def latency_quantiles(rows: Sequence[LatencyWindow]) -> tuple[float | None, float | None]:
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


WINDOWS_TESTED = 120  # per device, its latest windows are tested one by one (two hours of 1-minute windows)


@dataclass(frozen=True)
class DeviceDriftLine:
    device_id: str
    n_observed: int
    max_psi: float | None
    drifted_features: list[int]  # drifted in one of its windows or over its whole range
    predictions_drifted: bool = False
    confidence_drifted: bool = False
    drifted_labels: list[int] = field(default_factory=list)  # multilabel: labels whose positive rate drifted
    drifted_windows: int = 0  # its windows with a drifted feature or prediction histogram
    share: float = 0.0  # its part of the fleet's excess divergence over the drifted targets (attribution)


@dataclass(frozen=True)
class DriftReport:
    model_id: str
    version: str
    device_id: str | None  # None: fleet-wide
    windows: int
    features: list[drift.FeatureDrift]  # over the whole range: the device's, or the fleet's summed counts
    predictions: drift.PredictionDrift
    ignored_sketches: int = 0  # feature sketches whose bins do not match the reference profile
    devices: list[DeviceDriftLine] = field(default_factory=list)  # fleet-wide reports: one line per device
    alert: bool = False  # any drifted sample in the report's family (a window, a device, the fleet's sum)
    drifted_windows: int = 0
    tests: int = 0  # hypotheses in the report's false-discovery family
    attribution: detector.Attribution | None = None  # who and what drives the alert
    policy: detector.DriftPolicy = detector.DEFAULT_POLICY
    confidence: drift.PredictionDrift | None = None  # classifiers whose manifest has a confidence reference
    labels: list[drift.LabelDrift] = field(default_factory=list)  # multilabel models: one line per label


@dataclass
class _Window:
    device_id: str
    end_ms: int
    features: dict[int, list[int]]
    predictions: list[float] | None  # on the report's prediction bins
    confidence: list[float] | None = None  # on the reference's confidence bins
    labels: dict[int, list[float]] = field(default_factory=dict)  # label target -> rows [off, on]


class _Profile:
    """The reference counts per target, and how to read a window's sketches onto them."""

    def __init__(self, profile: pb.ReferenceProfile, rows: Sequence[TelemetryRecord]) -> None:
        self.features = [drift.ReferenceFeature(f.index, f.name, list(f.counts)) for f in profile.features]
        self.counts: dict[int, list[float]] = {f.index: [float(c) for c in f.counts] for f in self.features}
        self.labels: list[str] = list(profile.predictions.labels)
        self.has_predictions = sum(profile.predictions.counts) > 0
        if self.has_predictions:
            prediction_counts = [float(c) for c in profile.predictions.counts]
            if self.labels:  # a class the reference never predicted gets a bin of its own
                seen = dict.fromkeys(label for r in rows for label in r.prediction_counts.get("labels", []))
                extras = [label for label in seen if label not in set(self.labels)]
                self.labels += extras
                prediction_counts += [0.0] * len(extras)
            self.counts[detector.PREDICTIONS] = prediction_counts
        self.has_confidence = sum(profile.confidence.counts) > 0
        if self.has_confidence:
            self.counts[detector.CONFIDENCE] = [float(c) for c in profile.confidence.counts]
        rates = profile.label_rates
        usable = rates.rows > 0 and len(rates.positives) == len(rates.labels)
        self.label_names: list[str] = list(rates.labels) if usable else []
        for i, positives in enumerate(rates.positives if self.label_names else []):
            self.counts[detector.label_target(i)] = [float(rates.rows - positives), float(positives)]
        self.ignored = 0

    def read(self, row: TelemetryRecord) -> _Window:
        features = {}
        for key, counts in row.feature_counts.items():
            # a sketch over other bins than the reference's (a buggy or mismatched agent) cannot be compared
            if key.isdigit() and int(key) in self.counts and len(self.counts[int(key)]) == len(counts):
                features[int(key)] = counts
            else:
                self.ignored += 1
        window = _Window(row.device_id, row.window_end_ms, features, self._predictions(row), self._confidence(row))
        window.labels = self._labels(row)
        return window

    def _labels(self, row: TelemetryRecord) -> dict[int, list[float]]:
        counts = row.prediction_counts.get("label_counts") if self.label_names else None
        if not counts:
            return {}
        if len(counts) != len(self.label_names) + 1:  # counted over other labels than the manifest's
            self.ignored += 1
            return {}
        rows, *positives = (float(c) for c in counts)
        return {detector.label_target(i): [rows - p, p] for i, p in enumerate(positives)}

    def _confidence(self, row: TelemetryRecord) -> list[float] | None:
        counts = row.prediction_counts.get("confidence") if self.has_confidence else None
        if not counts:
            return None
        if len(counts) != len(self.counts[detector.CONFIDENCE]):
            self.ignored += 1
            return None
        return [float(c) for c in counts]

    def _predictions(self, row: TelemetryRecord) -> list[float] | None:
        if not self.has_predictions:
            return None
        p = row.prediction_counts
        counts = [float(c) for c in p.get("counts", [])]
        if self.labels:
            by_label = dict(zip(p.get("labels", []), counts, strict=False))
            return [by_label.get(label, 0.0) for label in self.labels]
        return counts if len(counts) == len(self.counts[detector.PREDICTIONS]) else None


def _add(histograms: Sequence[list[float] | None]) -> list[float] | None:
    present = [h for h in histograms if h is not None]
    return [sum(c) for c in zip(*present, strict=True)] if present else None


def _sum(windows: Sequence[_Window]) -> _Sums:
    features = drift.merge_counts(w.features for w in windows)
    labels: dict[int, list[float]] = {}
    for w in windows:
        for target, counts in w.labels.items():
            labels[target] = [a + b for a, b in zip(labels.get(target, [0.0, 0.0]), counts, strict=True)]
    return features, _add([w.predictions for w in windows]), _add([w.confidence for w in windows]), labels


# features, predictions, confidence, labels (label target -> rows [off, on])
_Sums = tuple[dict[int, list[int]], list[float] | None, list[float] | None, dict[int, list[float]]]


def _samples(scope: detector.Scope, device_id: str | None, end_ms: int | None, sums: _Sums) -> list[detector.Sample]:
    features, predictions, confidence, labels = sums
    samples = [detector.Sample(scope, device_id, end_ms, index, counts) for index, counts in features.items()]
    outputs = [(detector.PREDICTIONS, predictions), (detector.CONFIDENCE, confidence), *labels.items()]
    for target, counts in outputs:
        if counts is not None and sum(counts) > 0:
            samples.append(detector.Sample(scope, device_id, end_ms, target, counts))
    return samples


def drift_report(
    profile: pb.ReferenceProfile, rows: Sequence[TelemetryRecord], model_id: str, version: str,
    device_id: str | None, policy: detector.DriftPolicy = detector.DEFAULT_POLICY,
) -> DriftReport:  # fmt: skip
    """One family over each device's latest windows (WINDOWS_TESTED), every device's whole range and
    (fleet-wide) the fleet's sum. Older windows count in the sums: a report over months stays bounded."""
    reference = _Profile(profile, rows)
    windows = [reference.read(r) for r in rows]
    by_device: dict[str, list[_Window]] = defaultdict(list)
    for w in windows:
        by_device[w.device_id].append(w)
    recent = [w for own in by_device.values() for w in own[-WINDOWS_TESTED:]]  # rows come oldest first
    samples = [
        s
        for w in recent
        for s in _samples("window", w.device_id, w.end_ms, (w.features, w.predictions, w.confidence, w.labels))
    ]
    whole_sums: _Sums | None = None
    for device, own in sorted(by_device.items()):
        sums = _sum(own)
        samples += _samples("device", device, None, sums)
        whole_sums = sums if device == device_id else whole_sums
    if device_id is None:
        whole_sums = _sum(windows)
        samples += _samples("fleet", None, None, whole_sums)
    observed_labels = whole_sums[3] if whole_sums else {}  # the report's whole range, per label [off, on]
    findings = detector.detect(reference.counts, samples, policy)
    whole = "fleet" if device_id is None else "device"
    summary = {f.target: f for f in findings if f.scope == whole}
    drifted_windows = {(f.device_id, f.window_end_ms) for f in findings if f.scope == "window" and f.drifted}
    attribution = detector.attribute(findings)
    shares = {a.device_id: a.share for a in attribution.devices}
    lines = []
    if device_id is None:
        # each device's findings once: filtering all of them per device was quadratic in the fleet's size,
        # ~37 % of an alert evaluation over 200 devices (py-spy)
        findings_of: dict[str | None, list[detector.Finding]] = defaultdict(list)
        for f in findings:
            findings_of[f.device_id].append(f)
        windows_drifted = Counter(d for d, _ in drifted_windows)
        for device in sorted(by_device):
            mine = findings_of.get(device, [])
            own_range = [f for f in mine if f.scope == "device"]
            drifted = {f.target for f in mine if f.drifted}
            values = [f.psi for f in own_range if f.psi is not None and not detector.is_output(f.target)]
            lines.append(DeviceDriftLine(
                device_id=device,
                n_observed=max((f.n_observed for f in own_range if not detector.is_output(f.target)), default=0),
                max_psi=max(values) if values else None,
                drifted_features=sorted(t for t in drifted if not detector.is_output(t)),
                predictions_drifted=detector.PREDICTIONS in drifted,
                confidence_drifted=detector.CONFIDENCE in drifted,
                drifted_labels=sorted(i for i in map(detector.label_index, drifted) if i is not None),
                drifted_windows=windows_drifted[device],
                share=shares.get(device, 0.0),
            ))  # fmt: skip
    return DriftReport(
        model_id=model_id,
        version=version,
        device_id=device_id,
        windows=len(rows),
        features=[drift.feature_view(f, summary.get(f.index)) for f in reference.features],
        predictions=drift.prediction_view(summary.get(detector.PREDICTIONS)),
        ignored_sketches=reference.ignored,
        devices=lines,
        alert=attribution.alert,
        drifted_windows=len(drifted_windows),
        tests=sum(1 for f in findings if f.tested),
        attribution=attribution,
        policy=policy,
        confidence=drift.prediction_view(summary.get(detector.CONFIDENCE)) if reference.has_confidence else None,
        labels=[
            drift.label_view(i, name, reference.counts[t], observed_labels.get(t), summary.get(t))
            for i, name in enumerate(reference.label_names)
            for t in (detector.label_target(i),)
        ],
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
    return drift_report(registry.manifest_of(mv).reference, rows, mv.model_id, mv.version, device_id)


def fleet_drift(
    session: Session, model_id: str, version: str | None = None, *, since_ms: int | None = None
) -> DriftReport:
    """Drift of every device's inputs merged, plus a line per device, for one model version."""
    mv = registry.get_model_version(session, model_id, version)
    rows = _windows(session, model_id=mv.model_id, version=mv.version, since_ms=since_ms)
    return drift_report(registry.manifest_of(mv).reference, rows, mv.model_id, mv.version, None)
