"""Labels from the field: ground truth that arrives after the prediction, joined to the sampled predictions
by (device, prediction id), read back as accuracy (classifiers) or absolute error (regressors) per model
version, device or time window, each with a 95 % confidence interval.

Labels come two ways: `record` (POST /api/v1/feedback) and the device's feedback topic (ingest). A label
whose prediction has not been sampled, or not yet arrived, is kept: the sample batch may sit in a device's
outbox for days. A sample's own label (known on the device when it predicted) counts too; a later label
for the same prediction takes its place. The first label recorded for a prediction wins: redeliveries
change nothing.

The sampler favours rows worth a label (unsure ones, ones where the inputs moved), so a plain mean over
the sample over-weights the hard rows. Each sample carries the probability the device kept it with, and
every line also has the Horvitz-Thompson view (the Hajek ratio: sum of w x correct over sum of w, with
w = 1 / p), which estimates the accuracy over *all* the rows the devices served; its interval comes from
the linearised variance. A sample without a probability (an older agent) weighs 1.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import and_
from sqlmodel import Session, col, select

from cloud import registry
from cloud.db import insert_ignore
from cloud.db.tables import FeedbackRecord, SampleRecord
from cloud.errors import InvalidRequestError
from cloud.experiments.stats import Proportion, wilson_interval
from cloud.types import ClockMs, now_ms
from protocols.topics import TopicError, validate_device_id
from protocols.v1 import messages_pb2 as pb

GroupBy = Literal["version", "device", "window"]
MAX_LABEL = 4096
Z95 = 1.959964


@dataclass(frozen=True)
class Label:
    device_id: str
    prediction_id: str
    label: str
    ts_ms: int | None = None  # when the truth became known (default: when it is recorded)


def _check(label: Label) -> None:
    try:
        validate_device_id(label.device_id)
    except TopicError as exc:
        raise InvalidRequestError(str(exc)) from None
    for name, text in (("prediction_id", label.prediction_id), ("label", label.label)):
        if not text or len(text) > MAX_LABEL or "\x00" in text:
            raise InvalidRequestError(f"{name} must be 1-{MAX_LABEL} characters without NUL, got {text[:40]!r}")


def record(session: Session, labels: Sequence[Label], *, clock: ClockMs = now_ms, source: str = "api") -> int:
    """Store labels (all or none: one bad item refuses the batch); returns how many were new."""
    for label in labels:
        _check(label)
    received = clock()
    rows = [
        {
            "device_id": x.device_id,
            "prediction_id": x.prediction_id,
            "label": x.label,
            "ts_ms": x.ts_ms or received,
            "received_at_ms": received,
            "source": source,
        }  # fmt: skip
        for x in labels
    ]
    return insert_ignore(session, FeedbackRecord, rows, ["device_id", "prediction_id"])


@dataclass(frozen=True)
class AccuracyLine:
    key: str  # the model version, the device id, or the window's start (ms) as text
    labelled: int
    correct: int | None  # classifiers
    accuracy: float | None
    low: float | None  # 95 % interval: Wilson for accuracy, normal for the mean absolute error
    high: float | None
    mean_abs_error: float | None = None  # regressors
    # Horvitz-Thompson (Hajek) estimate over every row served, weighting each sample by 1 / p, and its 95 %
    # interval; for regressors, of the mean absolute error
    weighted: float | None = None
    weighted_low: float | None = None
    weighted_high: float | None = None
    effective_n: float | None = None  # Kish's effective sample size: (sum w)^2 / sum w^2


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def hajek(values: Sequence[float], weights: Sequence[float]) -> tuple[float, float | None, float | None, float]:
    """(estimate, low, high, effective n) of the weighted mean sum(w y) / sum(w): the Horvitz-Thompson
    ratio (Hajek) estimator of a Poisson sample with w = 1 / p, its 95 % normal interval from the
    linearised variance sum(w^2 (y - estimate)^2) / (sum w)^2 x n / (n - 1) (None below 2 samples)."""
    # every term is a ratio of weights, so dividing them by the largest changes nothing but keeps the squares
    # finite: one sample claiming p = 1e-200 (a weight of 1e200) overflowed total**2 into a 500 (tests/attacks)
    top = max(weights)
    weights = [w / top for w in weights]
    total = sum(weights)
    estimate = sum(w * y for w, y in zip(weights, values, strict=True)) / total
    effective = total**2 / sum(w * w for w in weights)
    n = len(values)
    if n < 2:
        return estimate, None, None, effective
    variance = sum(w * w * (y - estimate) ** 2 for w, y in zip(weights, values, strict=True)) / total**2 * n / (n - 1)
    half = Z95 * math.sqrt(variance)
    return estimate, estimate - half, estimate + half, effective


def _weight(p: float | None) -> float:
    return 1.0 / p if p is not None and 0 < p <= 1 else 1.0


def _error_line(key: str, pairs: Sequence[tuple[str, str, float]]) -> AccuracyLine:
    numbers = [(_number(p), _number(t), w) for p, t, w in pairs]
    errors = [(abs(p - t), w) for p, t, w in numbers if p is not None and t is not None]
    if not errors:
        return AccuracyLine(key, 0, None, None, None, None)
    n, mean = len(errors), sum(e for e, _ in errors) / len(errors)
    weighted, w_low, w_high, effective = hajek([e for e, _ in errors], [w for _, w in errors])
    extra = {"weighted": weighted, "weighted_low": None if w_low is None else max(0.0, w_low),
             "weighted_high": w_high, "effective_n": effective}  # fmt: skip
    if n < 2:
        return AccuracyLine(key, n, None, None, None, None, mean, **extra)
    half = Z95 * math.sqrt(sum((e - mean) ** 2 for e, _ in errors) / (n - 1)) / math.sqrt(n)
    return AccuracyLine(key, n, None, None, max(0.0, mean - half), mean + half, mean, **extra)


def summarise(
    pairs: Iterable[tuple[str, str, str] | tuple[str, str, str, float | None]], *, regression: bool = False
) -> list[AccuracyLine]:
    """(group key, prediction, truth[, inclusion probability]) -> one line per key, in key order.
    Regressors: pairs whose prediction or truth is not a number are left out."""
    groups: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    for key, prediction, truth, *p in pairs:
        groups[key].append((prediction, truth, _weight(p[0] if p else None)))
    lines = []
    for key in sorted(groups, key=lambda k: (len(k), k)):
        if regression:
            lines.append(_error_line(key, groups[key]))
            continue
        hits = [float(p == t) for p, t, _ in groups[key]]
        correct, n = int(sum(hits)), len(hits)
        interval = wilson_interval(Proportion(correct, n))
        low, high = interval if interval else (None, None)
        weighted, w_low, w_high, effective = hajek(hits, [w for _, _, w in groups[key]])
        lines.append(AccuracyLine(
            key, n, correct, correct / n, low, high, weighted=weighted,
            weighted_low=None if w_low is None else max(0.0, w_low),
            weighted_high=None if w_high is None else min(1.0, w_high), effective_n=effective,
        ))  # fmt: skip
    return lines


def field_accuracy(
    session: Session, model_id: str, version: str | None = None, *, by: GroupBy = "version",
    window_ms: int = 3_600_000, since_ms: int | None = None,
) -> list[AccuracyLine]:  # fmt: skip
    """Accuracy (or absolute error) of a model's sampled predictions that have a label, grouped `by`
    version (all versions when `version` is None), device or window (of the prediction's time)."""
    if window_ms <= 0:
        raise InvalidRequestError("window_ms must be positive")
    latest = registry.get_model_version(session, model_id, version)  # NotFoundError for an unknown one
    regression = registry.manifest_of(latest).io.task == pb.TASK_REGRESSION
    query = (
        select(SampleRecord, FeedbackRecord.label)
        .join(FeedbackRecord, and_(col(FeedbackRecord.device_id) == col(SampleRecord.device_id),
                                   col(FeedbackRecord.prediction_id) == col(SampleRecord.prediction_id)),
              isouter=True)
        .where(SampleRecord.model_id == model_id)
    )  # fmt: skip
    if version is not None:
        query = query.where(SampleRecord.model_version == latest.version)
    if since_ms is not None:
        query = query.where(SampleRecord.ts_ms >= since_ms)
    triples: list[tuple[str, str, str, float | None]] = []
    for sample, late in session.exec(query):
        truth = late or sample.label
        if truth is None:
            continue
        key = {"version": sample.model_version, "device": sample.device_id,
               "window": str(sample.ts_ms - sample.ts_ms % window_ms)}[by]  # fmt: skip
        triples.append((key, sample.prediction, truth, sample.inclusion_probability))
    return summarise(triples, regression=regression)
