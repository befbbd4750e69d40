"""Windowed telemetry -> pb.TelemetryWindow: counts, errors, latency histogram, accuracy on labelled
inputs, drift sketches and the prediction histogram.

Everything here is a count over fixed bins, so windows merge across devices by adding: the latency
bounds are fixed (log-spaced, 10 per decade, 10 µs .. 10 s) and the feature / prediction bins are those
of the model's reference profile. Values below the first edge count in the first bin, values above the
last edge in the last one. `inference_count` counts rows; latency is one sample per predict call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.resources import CpuMeter, rss_bytes
from edge_agent.serving import ServingModel
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
    features: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)  # (index, edges, counts)
    class_labels: list[str] = field(default_factory=list)
    value_edges: np.ndarray | None = None
    predictions: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.serving is None:
            return
        manifest = self.serving.manifest
        for profile in manifest.reference.features:
            if len(profile.bin_edges) >= 2:
                edges = np.asarray(profile.bin_edges, dtype=np.float64)
                self.features.append((profile.index, edges, np.zeros(len(edges) - 1, dtype=np.int64)))
        reference = manifest.reference.predictions
        self.class_labels = list(reference.labels) or list(manifest.io.class_labels)
        if self.class_labels:
            self.predictions = np.zeros(len(self.class_labels), dtype=np.int64)
        elif len(reference.bin_edges) >= 2:
            self.value_edges = np.asarray(reference.bin_edges, dtype=np.float64)
            self.predictions = np.zeros(len(self.value_edges) - 1, dtype=np.int64)

    def add_latency(self, latency_us: float) -> None:
        self.latency[int(np.searchsorted(LATENCY_BOUNDS_US, latency_us, side="left"))] += 1
        self.latency_low = min(self.latency_low, latency_us)
        self.latency_high = max(self.latency_high, latency_us)

    def add_sketches(self, x: np.ndarray, prediction: Any) -> None:
        for index, edges, counts in self.features:
            if index < x.shape[1]:
                column = x[:, index]
                column = column[np.isfinite(column)]  # a missing value (NaN) is in no bin
                counts += np.bincount(bin_index(edges, column), minlength=len(counts))
        if self.predictions is None:
            return
        if self.class_labels and prediction.labels is not None:
            positions = {label: i for i, label in enumerate(self.class_labels)}
            for label in prediction.labels:
                if str(label) in positions:
                    self.predictions[positions[str(label)]] += 1
        elif self.value_edges is not None:
            values = _first_values(prediction)
            if values is not None:
                self.predictions += np.bincount(bin_index(self.value_edges, values), minlength=len(self.predictions))


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
        with self._lock:
            window = self._window
            window.inferences += rows
            self.total_inferences += rows
            window.add_latency(latency_us)
            if label is not None and rows == 1:  # a true label speaks for one row
                window.labelled += 1
                if prediction.labels is not None and str(prediction.labels[0]) == label:
                    window.correct += 1
            if window.serving is serving:  # bins belong to the window's model; skip a call that straddled a swap
                window.add_sketches(x, prediction)

    def record_error(self, latency_us: float | None = None) -> None:
        with self._lock:
            self._window.errors += 1
            self.total_errors += 1
            if latency_us is not None:
                self._window.add_latency(latency_us)

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
        )
        if window.latency_high > 0:
            low, high = window.latency_low, window.latency_high
            message.latency_p50_us = percentile_from_histogram(LATENCY_BOUNDS_US, window.latency, 0.5, low, high)
            message.latency_p95_us = percentile_from_histogram(LATENCY_BOUNDS_US, window.latency, 0.95, low, high)
        if window.serving is not None:
            message.model.CopyFrom(window.serving.ref)
        for index, _edges, counts in window.features:
            message.features.add(index=index, counts=counts.tolist())
        if window.predictions is not None:
            message.predictions.counts.extend(window.predictions.tolist())
            if window.class_labels:
                message.predictions.labels.extend(window.class_labels)
            elif window.value_edges is not None:
                message.predictions.bin_edges.extend(window.value_edges.tolist())
        return message
