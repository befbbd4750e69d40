"""Windowed telemetry -> pb.TelemetryWindow: counts, errors, latency histogram, accuracy on labelled
inputs, drift sketches and the prediction histogram.

Everything here is a count over fixed bins, so windows merge across devices by adding: the latency
bounds are fixed (log-spaced, 10 per decade, 10 µs .. 10 s) and the feature / prediction bins are those
of the model's reference profile. Values below the first edge count in the first bin, values above the
last edge in the last one. `inference_count` counts rows; latency is one sample per predict call.
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.resources import CpuMeter, rss_bytes
from edge_agent.serving.slot import ServingModel
from protocols import SCHEMA_VERSION
from protocols.v1 import messages_pb2 as pb

LATENCY_BOUNDS_US: tuple[float, ...] = tuple(round(10 ** (1 + i / 10), 3) for i in range(61))


def bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The bin of each value over `edges` (len(edges) - 1 bins), out-of-range values in the end bins."""
    bins = len(edges) - 1
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins - 1)


def percentile_from_histogram(bounds: tuple[float, ...], counts: list[int], q: float, low: float, high: float) -> float:
    """The q-quantile, interpolated log-linearly inside its bucket and clamped to [low, high] (the
    smallest and largest values seen)."""
    total = sum(counts)
    if total == 0:
        return 0.0
    rank, seen = q * total, 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            lo = bounds[i - 1] if i > 0 else low
            hi = bounds[i] if i < len(bounds) else high
            lo, hi = max(lo, low), min(hi, high)
            if lo <= 0 or hi <= lo:
                return float(min(max(hi, low), high))
            return float(lo * (hi / lo) ** ((rank - seen) / count))
        seen += count
    return float(high)


def prediction_strings(prediction: Any) -> list[str]:
    """One string per row: the class label, or the (first) predicted value."""
    if prediction.labels is not None:
        return [str(label) for label in prediction.labels]
    values = np.asarray(prediction.values)
    if values.ndim > 1:
        values = values[:, 0]
    return [f"{float(v):.6g}" for v in values.reshape(-1)]


def _first_values(prediction: Any) -> np.ndarray | None:
    if prediction.values is None:
        return None
    values = np.asarray(prediction.values, dtype=np.float64)
    return values[:, 0] if values.ndim > 1 else values.reshape(-1)


Counts = np.ndarray | list[int]  # dense counts, or the positions to bump by one (cheaper for a few rows)


def _add(total: np.ndarray | None, counts: Counts | None) -> None:
    if total is None or counts is None:
        return
    if isinstance(counts, list):
        for position in counts:
            total[position] += 1
    else:
        total += counts


SMALL_BATCH_ROWS = 4  # up to this many rows, plain Python beats numpy's per-call overhead


@dataclass(frozen=True)
class FeatureBins:
    """The reference profile's bins of every feature, laid out to count a batch cheaply: a value's bin is
    the number of the feature's inner edges at or below it (values outside the edges land in the end
    bins). Counts are flat: each feature's bins after the previous feature's."""

    indexes: tuple[int, ...]  # the input column of each profiled feature
    inner: tuple[tuple[float, ...], ...]  # inner edges of each feature (all edges but the first and last)
    offsets: tuple[int, ...]  # where each feature's counts start
    sizes: tuple[int, ...]  # bins of each feature
    padded: np.ndarray  # (F, max_bins - 1) the inner edges, +inf where a feature has fewer bins

    @classmethod
    def of(cls, profiles: Any) -> FeatureBins | None:
        kept = [(int(p.index), [float(e) for e in p.bin_edges]) for p in profiles if len(p.bin_edges) >= 2]
        if not kept:
            return None
        sizes = tuple(len(edges) - 1 for _, edges in kept)
        padded = np.full((len(kept), max(sizes) - 1), np.inf)
        for row, (_, edges) in enumerate(kept):
            padded[row, : len(edges) - 2] = edges[1:-1]
        offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(sizes)[:-1]]))
        inner = tuple(tuple(edges[1:-1]) for _, edges in kept)
        return cls(tuple(i for i, _ in kept), inner, offsets, sizes, padded)

    @property
    def total(self) -> int:
        return self.offsets[-1] + self.sizes[-1]

    def count(self, x: np.ndarray) -> Counts:
        """The rows' counts: for a small batch the flat positions to bump, else dense flat counts.
        A missing value (NaN) counts in no bin; a feature beyond x's columns is skipped."""
        width = x.shape[1]
        if x.shape[0] <= SMALL_BATCH_ROWS:
            positions = []
            for row in x.tolist():
                for index, inner, offset in zip(self.indexes, self.inner, self.offsets, strict=True):
                    if index < width and math.isfinite(value := row[index]):
                        positions.append(offset + bisect.bisect_right(inner, value))
            return positions
        indexes, offsets, padded = np.asarray(self.indexes), np.asarray(self.offsets), self.padded
        if max(self.indexes) >= width:
            keep = indexes < width
            indexes, offsets, padded = indexes[keep], offsets[keep], padded[keep]
        columns = x[:, indexes]
        bins = (columns[:, :, None] >= padded[None, :, :]).sum(axis=2)
        flat = (bins + offsets)[np.isfinite(columns)]
        return np.bincount(flat, minlength=self.total)

    def split(self, flat: np.ndarray) -> list[tuple[int, list[int]]]:
        return [
            (index, flat[start : start + size].tolist())
            for index, start, size in zip(self.indexes, self.offsets, self.sizes, strict=True)
        ]


@dataclass
class _Window:
    start_ms: int
    serving: ServingModel | None
    inferences: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_US) + 1))
    latency_low: float = float("inf")
    latency_high: float = 0.0
    labelled: int = 0
    correct: int = 0
    bins: FeatureBins | None = None
    feature_counts: np.ndarray | None = None  # flat, see FeatureBins
    class_labels: list[str] = field(default_factory=list)
    class_positions: dict[str, int] = field(default_factory=dict)
    value_edges: np.ndarray | None = None
    predictions: np.ndarray | None = None
    shadow_compared: int = 0  # rows also answered by the previous model (probation), off the request path
    shadow_agreed: int = 0
    shadow_dropped: int = 0  # rows sampled for shadowing but dropped: the shadow queue was full

    def __post_init__(self) -> None:
        if self.serving is None:
            return
        manifest = self.serving.manifest
        self.bins = FeatureBins.of(manifest.reference.features)
        if self.bins is not None:
            self.feature_counts = np.zeros(self.bins.total, dtype=np.int64)
        reference = manifest.reference.predictions
        self.class_labels = list(reference.labels) or list(manifest.io.class_labels)
        if self.class_labels:
            self.class_positions = {label: i for i, label in enumerate(self.class_labels)}
            self.predictions = np.zeros(len(self.class_labels), dtype=np.int64)
        elif len(reference.bin_edges) >= 2:
            self.value_edges = np.asarray(reference.bin_edges, dtype=np.float64)
            self.predictions = np.zeros(len(self.value_edges) - 1, dtype=np.int64)

    def add_latency(self, latency_us: float) -> None:
        self.latency[bisect.bisect_left(LATENCY_BOUNDS_US, latency_us)] += 1
        self.latency_low = min(self.latency_low, latency_us)
        self.latency_high = max(self.latency_high, latency_us)

    def sketch(self, x: np.ndarray, prediction: Any) -> tuple[Counts | None, Counts | None]:
        """The batch's feature and prediction counts (computed outside the lock; added by add_sketch)."""
        features = self.bins.count(x) if self.bins is not None else None
        predictions: np.ndarray | list[int] | None = None
        if self.predictions is not None:
            if self.class_labels and prediction.labels is not None:
                positions = self.class_positions
                predictions = [positions[label] for label in map(str, prediction.labels) if label in positions]
                if len(predictions) > SMALL_BATCH_ROWS:
                    predictions = np.bincount(predictions, minlength=len(self.class_labels))
            elif self.value_edges is not None:
                values = _first_values(prediction)
                if values is not None:
                    found = bin_index(self.value_edges, values[np.isfinite(values)])
                    predictions = np.bincount(found, minlength=len(self.predictions))
        return features, predictions

    def add_sketch(self, features: Counts | None, predictions: Counts | None) -> None:
        _add(self.feature_counts, features)
        _add(self.predictions, predictions)


class Telemetry:
    """Accumulates the current window (thread-safe: predict runs on many threads)."""

    def __init__(self, device_id: str, start_ms: int, serving: ServingModel | None = None) -> None:
        self.device_id = device_id
        self._lock = threading.Lock()
        self._window = _Window(start_ms, serving)
        self._cpu = CpuMeter()
        self.total_inferences = 0
        self.total_errors = 0

    def record(
        self, serving: ServingModel, x: np.ndarray, prediction: Any, latency_us: float, label: str | None = None
    ) -> None:
        rows = int(x.shape[0])
        window = self._window
        # the bins belong to the window's model: a call that straddled a swap adds no sketch
        sketch = window.sketch(x, prediction) if window.serving is serving else (None, None)
        with self._lock:
            if self._window is not window:  # rotated meanwhile: count in the new window, without sketch
                window, sketch = self._window, (None, None)
            window.inferences += rows
            self.total_inferences += rows
            window.add_latency(latency_us)
            if label is not None and rows == 1:  # a true label speaks for one row
                window.labelled += 1
                if prediction.labels is not None and str(prediction.labels[0]) == label:
                    window.correct += 1
            window.add_sketch(*sketch)

    def record_error(self, latency_us: float | None = None) -> None:
        with self._lock:
            self._window.errors += 1
            self.total_errors += 1
            if latency_us is not None:
                self._window.add_latency(latency_us)

    def record_shadow(self, compared: int, agreed: int, dropped: int = 0) -> None:
        """Shadow figures (from the shadow thread): they count in the window open when they arrive."""
        with self._lock:
            self._window.shadow_compared += compared
            self._window.shadow_agreed += agreed
            self._window.shadow_dropped += dropped

    def close_window(self, end_ms: int, seq: int, next_serving: ServingModel | None) -> pb.TelemetryWindow | None:
        """End the current window and open the next, for next_serving. Returns the window as a message,
        or None if it is not worth sending (no model served and nothing happened)."""
        with self._lock:
            window, self._window = self._window, _Window(end_ms, next_serving)
        if window.serving is None and window.inferences == 0 and window.errors == 0:
            return None
        message = pb.TelemetryWindow(
            schema_version=SCHEMA_VERSION,
            device_id=self.device_id,
            seq=seq,
            window_start_ms=window.start_ms,
            window_end_ms=end_ms,
            inference_count=window.inferences,
            error_count=window.errors,
            latency_us=pb.Histogram(bounds=LATENCY_BOUNDS_US, counts=window.latency),
            labelled_count=window.labelled,
            correct_count=window.correct,
            cpu_percent=self._cpu.percent(),
            rss_bytes=rss_bytes(),
            shadow_compared=window.shadow_compared,
            shadow_agreed=window.shadow_agreed,
            shadow_dropped=window.shadow_dropped,
        )
        if window.latency_high > 0:
            low, high = window.latency_low, window.latency_high
            message.latency_p50_us = percentile_from_histogram(LATENCY_BOUNDS_US, window.latency, 0.5, low, high)
            message.latency_p95_us = percentile_from_histogram(LATENCY_BOUNDS_US, window.latency, 0.95, low, high)
        if window.serving is not None:
            message.model.CopyFrom(window.serving.ref)
        if window.bins is not None and window.feature_counts is not None:
            for index, counts in window.bins.split(window.feature_counts):
                message.features.add(index=index, counts=counts)
        if window.predictions is not None:
            message.predictions.counts.extend(window.predictions.tolist())
            if window.class_labels:
                message.predictions.labels.extend(window.class_labels)
            elif window.value_edges is not None:
                message.predictions.bin_edges.extend(window.value_edges.tolist())
        return message
