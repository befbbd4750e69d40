"""Windowed telemetry -> pb.TelemetryWindow: counts, errors, latency histogram, accuracy on labelled
inputs, drift sketches, the prediction histogram, (classifiers) the confidence histogram and (multilabel
models) the rows each label is predicted on.

Everything here is a count over fixed bins, so windows merge across devices by adding: the latency
bounds are fixed (log-spaced, 10 per decade, 10 µs .. 10 s) and the feature / prediction bins are those
of the model's reference profile. Values below the first edge count in the first bin, values above the
last edge in the last one. `inference_count` counts rows; latency is one sample per predict call.

The sketches (feature and prediction counts) cost far more than the bookkeeping, so predict only copies
the rows to sketch into a buffer, counted in one vectorised pass when it fills or the window closes. Every
row of a window is sketched up to SKETCH_EXACT_ROWS; past that every k-th, k growing with the rows seen, so
a busy device keeps drift figures (over a sample) without paying per row. The window goes out compact
(protocols.telemetry_bins).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from edge_agent.resources import CpuMeter, rss_bytes
from edge_agent.serving.confidence import top_class
from edge_agent.serving.slot import ServingModel
from protocols import SCHEMA_VERSION
from protocols.telemetry_bins import LATENCY_BOUNDS_US, pack_features_implied, sparse_pairs
from protocols.v1 import messages_pb2 as pb

__all__ = ["LATENCY_BOUNDS_US", "FeatureBins", "Telemetry", "bin_index", "percentile_from_histogram"]
OVERFILL_RATIO, OVERFILL_MIN_COUNT = 2.0, 10  # a bin holding twice its reference share, and 10 rows or more
SKETCH_EXACT_ROWS = 1024  # rows of a window all sketched; past that, a thinning sample
PENDING_ROWS = 256  # rows buffered before one vectorised count
FOLD_CALLS = 512  # calls appended (unlocked) before they are counted into the window in one pass
_NEVER = 1 << 62
_latency_bucket = partial(bisect.bisect_left, LATENCY_BOUNDS_US)  # bound once: record() runs per call
_LATENCY_BOUNDS = np.asarray(LATENCY_BOUNDS_US, dtype=np.float64)


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


@dataclass(frozen=True)
class FeatureBins:
    """The reference profile's bins of every feature, laid out to count a batch cheaply: a value's bin is
    the number of the feature's inner edges at or below it (values outside the edges land in the end
    bins). Counts are flat: each feature's bins after the previous feature's."""

    indexes: tuple[int, ...]  # the input column of each profiled feature
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
        padded.flags.writeable = False  # shared by the windows of a manifest (_Layout)
        offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(sizes)[:-1]]))
        return cls(tuple(i for i, _ in kept), offsets, sizes, padded)

    @property
    def total(self) -> int:
        return self.offsets[-1] + self.sizes[-1]

    def count(self, x: np.ndarray) -> np.ndarray:
        """The rows' dense flat counts. A missing value (NaN) counts in no bin; a feature beyond x's columns
        is skipped. One comparison per inner edge over the whole batch (not per row): numpy's pace."""
        indexes, offsets, padded = np.asarray(self.indexes), np.asarray(self.offsets), self.padded
        if max(self.indexes) >= x.shape[1]:
            keep = indexes < x.shape[1]
            indexes, offsets, padded = indexes[keep], offsets[keep], padded[keep]
        columns = x[:, indexes].astype(np.float64)
        bins = np.broadcast_to(offsets, columns.shape).copy()
        for edge in padded.T:
            bins += columns >= edge
        return np.bincount(bins[np.isfinite(columns)], minlength=self.total)

    def split(self, flat: np.ndarray) -> list[tuple[int, list[int]]]:
        return [
            (index, flat[start : start + size].tolist())
            for index, start, size in zip(self.indexes, self.offsets, self.sizes, strict=True)
        ]


@dataclass(frozen=True)
class _Layout:
    """What a window's counts need of a manifest's reference (bins, labels, edges), worked out once per
    reference and io schema rather than per window: a model swap's new window rebuilt its bins from the
    manifest, 7% of a simulated fleet's CPU in a rollout. Shared by every window of that manifest, so
    nothing in it is ever changed (its arrays are read-only)."""

    bins: FeatureBins | None
    class_labels: tuple[str, ...]
    class_positions: dict[str, int]
    value_edges: np.ndarray | None
    confidence_edges: np.ndarray | None
    labels: int  # multilabel: reference.label_rates' labels

    @staticmethod
    def of(manifest: pb.Manifest) -> _Layout:
        key = (
            manifest.reference.SerializeToString(deterministic=True),
            manifest.io.SerializeToString(deterministic=True),
        )
        layout = _LAYOUTS.get(key)
        if layout is None:
            if len(_LAYOUTS) >= _LAYOUTS_KEPT:
                _LAYOUTS.clear()  # a process that saw that many manifests starts over
            layout = _LAYOUTS[key] = _Layout._build(manifest)
        return layout

    @staticmethod
    def _build(manifest: pb.Manifest) -> _Layout:
        reference = manifest.reference
        labels = tuple(reference.predictions.labels) or tuple(manifest.io.class_labels)
        value_edges = None
        if not labels and len(reference.predictions.bin_edges) >= 2:
            value_edges = _read_only(np.asarray(reference.predictions.bin_edges, dtype=np.float64))
        confidence_edges = None
        if len(reference.confidence.bin_edges) >= 2:
            confidence_edges = _read_only(np.asarray(reference.confidence.bin_edges, dtype=np.float64))
        return _Layout(
            bins=FeatureBins.of(reference.features),
            class_labels=labels,
            class_positions={label: i for i, label in enumerate(labels)},
            value_edges=value_edges,
            confidence_edges=confidence_edges,
            labels=len(reference.label_rates.labels),
        )


_LAYOUTS: dict[tuple[bytes, bytes], _Layout] = {}
_LAYOUTS_KEPT = 64


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(slots=True)  # slots: record() reads and writes these on every predict
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
    sketched: int = 0  # rows counted into feature_counts
    class_labels: list[str] = field(default_factory=list)
    class_positions: dict[str, int] = field(default_factory=dict)
    value_edges: np.ndarray | None = None
    predictions: np.ndarray | None = None
    confidence_edges: np.ndarray | None = None  # the manifest's reference.confidence bins (classifiers)
    confidence: np.ndarray | None = None  # rows per confidence bin
    label_positives: np.ndarray | None = None  # multilabel: rows per label of reference.label_rates predicted on
    label_rows: int = 0  # rows counted into label_positives
    pending_scores: list[np.ndarray] = field(default_factory=list)  # score rows of the pending rows that had them
    shadow_compared: int = 0  # rows also answered by the previous model (probation), off the request path
    shadow_agreed: int = 0
    shadow_dropped: int = 0  # rows sampled for shadowing but dropped: the shadow queue was full
    pending: np.ndarray | None = None  # rows to sketch, counted in one pass (see the module's docstring)
    pending_rows: int = 0
    pending_outputs: list[Any] = field(default_factory=list)  # their predictions (labels or first values)
    next_sketch: int = 0  # the row number (inferences) of the next row to sketch
    flush_at: int = 0  # a new model's first window: due out at this many rows (and errors); 0: at the interval

    def __post_init__(self) -> None:
        if self.serving is None:
            self.next_sketch = _NEVER
            return
        layout = _Layout.of(self.serving.manifest)
        self.bins = layout.bins
        if self.bins is not None:
            self.feature_counts = np.zeros(self.bins.total, dtype=np.int64)
        self.class_labels = list(layout.class_labels)
        if self.class_labels:
            self.class_positions = layout.class_positions  # shared, only read
            self.predictions = np.zeros(len(self.class_labels), dtype=np.int64)
        elif layout.value_edges is not None:
            self.value_edges = layout.value_edges
            self.predictions = np.zeros(len(self.value_edges) - 1, dtype=np.int64)
        if layout.confidence_edges is not None:
            self.confidence_edges = layout.confidence_edges
            self.confidence = np.zeros(len(self.confidence_edges) - 1, dtype=np.int64)
        if layout.labels:
            self.label_positives = np.zeros(layout.labels, dtype=np.int64)
        if self.bins is not None or self.predictions is not None or self.scored:
            self.pending = np.empty((PENDING_ROWS, self.serving.n_features), dtype=np.float32)
        else:
            self.next_sketch = _NEVER

    @property
    def scored(self) -> bool:
        """Whether sketched rows keep their scores (a multilabel model's scores are its per-label probabilities)."""
        return self.confidence is not None or self.label_positives is not None

    def add_latency(self, latency_us: float) -> None:
        self.latency[_latency_bucket(latency_us)] += 1
        self.latency_low = min(self.latency_low, latency_us)
        self.latency_high = max(self.latency_high, latency_us)

    def keep(self, x: np.ndarray, prediction: Any, rows: int, first: int) -> None:
        """Queue the rows due for sketching (called, by record, with `first` the window's rows before x's, once
        first + rows > next_sketch). Per call while a window's first rows are all sketched, so plain ints
        and no slicing when the whole call is kept: the one copy left is the row into `pending`."""
        if self.pending is None:
            return
        if first < SKETCH_EXACT_ROWS:
            start, stop = 0, min(rows, SKETCH_EXACT_ROWS - first)
            self.next_sketch = first + stop
        else:  # one row of this call: the one at next_sketch (or the first, after a call larger than k)
            start = self.next_sketch - first if self.next_sketch > first else 0
            stop = start + 1
            self.next_sketch = first + stop + first // SKETCH_EXACT_ROWS
        scores = getattr(prediction, "scores", None) if self.scored else None
        if start == 0 and stop == rows:  # the whole call
            chosen, outputs = x, _outputs(prediction, None, rows)
        else:
            picked = slice(start, stop)
            chosen, outputs = x[picked], _outputs(prediction, picked, rows)
            if scores is not None:
                scores = scores[picked]
        n, filled = stop - start, self.pending_rows
        if filled + n > PENDING_ROWS:
            self.drain()
            filled = 0
        if n > PENDING_ROWS:
            self._count(chosen, outputs, [] if scores is None else [scores])
            return
        self.pending[filled : filled + n] = chosen
        self.pending_rows = filled + n
        self.pending_outputs.extend(outputs)  # not +=: with numpy 2.4 `list += ndarray` is a ufunc add and raises
        if scores is not None:
            # a view (a runtime returns fresh outputs per call): the top class is taken per drained batch
            self.pending_scores.append(scores)

    def drain(self) -> None:
        if self.pending is not None and self.pending_rows:
            self._count(self.pending[: self.pending_rows], self.pending_outputs, self.pending_scores)
        self.pending_rows, self.pending_outputs, self.pending_scores = 0, [], []

    def _count(self, x: np.ndarray, outputs: list[Any], scores: list[np.ndarray]) -> None:
        if self.confidence is not None and self.confidence_edges is not None and scores:
            try:
                top = top_class(np.concatenate(scores))
            except ValueError:  # score rows of different widths: a model that changes its classes mid-window
                top = None
            if top is not None:
                found = bin_index(self.confidence_edges, top)
                self.confidence += np.bincount(found, minlength=len(self.confidence))
        if self.label_positives is not None and scores:
            # a label is on where its probability is above one half, as the runtime labels the row
            on = [s.reshape(len(s), -1) > 0.5 for s in scores]
            if all(o.shape[1] == len(self.label_positives) for o in on):  # else a model other than the manifest's
                for o in on:
                    self.label_positives += o.sum(axis=0)
                    self.label_rows += o.shape[0]
        if self.bins is not None and self.feature_counts is not None and x.shape[1]:
            self.feature_counts += self.bins.count(x)
            self.sketched += x.shape[0]
        if self.predictions is None:
            return
        if self.class_positions:
            positions = self.class_positions
            hits = [positions[o] for o in map(str, outputs) if o in positions]
            self.predictions += np.bincount(np.asarray(hits, dtype=np.int64), minlength=len(self.predictions))
        elif self.value_edges is not None:
            values = np.asarray([o for o in outputs if o is not None], dtype=np.float64)
            found = bin_index(self.value_edges, values[np.isfinite(values)])
            self.predictions += np.bincount(found, minlength=len(self.predictions))


def over_filled(window: _Window) -> np.ndarray | None:
    """The bins (flat, as FeatureBins counts them) holding at least OVERFILL_RATIO times their reference
    share of the window's rows: where the inputs moved to, a hint the sampler favours (not a verdict: the
    cloud's detector decides drift)."""
    bins, counts = window.bins, window.feature_counts
    if bins is None or counts is None or window.serving is None or window.sketched == 0:
        return None
    reference = {int(p.index): list(p.counts) for p in window.serving.manifest.reference.features}
    flat = np.concatenate([
        np.asarray(reference[i], dtype=np.float64) if len(reference.get(i, [])) == size else np.zeros(size)
        for i, size in zip(bins.indexes, bins.sizes, strict=True)
    ])  # fmt: skip
    totals = np.repeat(np.add.reduceat(flat, np.asarray(bins.offsets)), bins.sizes)
    with np.errstate(divide="ignore", invalid="ignore"):
        reference_share = np.where(totals > 0, flat / totals, np.inf)  # no reference: never flagged
    return (counts >= OVERFILL_MIN_COUNT) & (counts / window.sketched >= OVERFILL_RATIO * reference_share)


def _outputs(prediction: Any, picked: slice | None, rows: int) -> Any:
    """What the prediction histogram counts for the picked rows (None: all the call's `rows`): labels, or first
    values. May be the prediction's own label list: it is only read (a runtime returns a fresh one per call)."""
    labels = prediction.labels
    if labels is not None:
        return labels if picked is None else labels[picked]
    values = _first_values(prediction)
    if values is None:
        return [None] * (rows if picked is None else picked.stop - picked.start)
    return (values if picked is None else values[picked]).tolist()


class Telemetry:
    """Accumulates the current window (thread-safe: predict runs on many threads).

    Most calls (no label, no row due for sketching) only append (rows, latency) to `_calls`, without the
    lock: a list append is atomic, and the calls are folded into the window, under the lock, every FOLD_CALLS
    calls and before the window is read or closed. Folding takes the first n calls and deletes exactly those,
    so a call appended meanwhile waits for the next fold: every call counts once, in the window open at its
    fold."""

    # slots: record() runs on every predict; the totals since start are the closed windows' plus the open one's
    __slots__ = ("_calls", "_closed_errors", "_closed_inferences", "_cpu", "_lock", "_seen", "_window", "device_id",
                 "first_window_rows", "flagged")  # fmt: skip

    def __init__(self, device_id: str, start_ms: int, serving: ServingModel | None = None, *,
                 first_window_rows: int = 0) -> None:  # fmt: skip
        self.device_id = device_id
        self.first_window_rows = first_window_rows
        self._lock = threading.Lock()
        self._window = _Window(start_ms, serving)
        self._calls: list[tuple[int, float]] = []  # (rows, latency µs) of calls not yet folded into the window
        self._seen = 0  # the window's rows, folded or not: where its sketches fall (see record)
        self._cpu = CpuMeter()
        self._closed_inferences = 0
        self._closed_errors = 0
        # the last closed window's model, bins and over-filled bins (over_filled), for the sampler
        self.flagged: tuple[ServingModel | None, FeatureBins | None, np.ndarray | None] = (None, None, None)

    @property
    def total_inferences(self) -> int:
        """Rows predicted since start."""
        with self._lock:
            self._fold()
            return self._closed_inferences + self._window.inferences

    @property
    def total_errors(self) -> int:
        with self._lock:
            return self._closed_errors + self._window.errors

    def record(
        self, serving: ServingModel, x: np.ndarray, prediction: Any, latency_us: float, label: str | None = None
    ) -> bool:
        """Count one call; True when it fills a new model's first window (time to flush it)."""
        rows = x.shape[0]
        seen = self._seen
        # unlocked: _seen only places the sketches (two racing calls may both sketch, or skip, a row; one racing a
        # close may start the next window's sketch late); the counts come from _calls and the locked path, exactly
        self._seen = seen + rows
        window = self._window
        # the common call: counted at the next fold (a new model's first window counts under the lock: it is
        # flushed as soon as it holds first_window_rows)
        if label is None and seen + rows <= window.next_sketch and not window.flush_at:
            calls = self._calls
            calls.append((rows, latency_us))
            if len(calls) >= FOLD_CALLS:
                with self._lock:
                    self._fold()
            return False
        with self._lock:
            window = self._window  # the one open now (a close may have run since the read above)
            # the bins are the window's model's: a call across a swap adds no sketch
            if seen + rows > window.next_sketch and window.serving is serving:
                window.keep(x, prediction, rows, seen)
            window.inferences += rows
            window.latency[_latency_bucket(latency_us)] += 1  # add_latency, inlined: every row of a window's first
            if latency_us < window.latency_low:  # 1024 comes this way
                window.latency_low = latency_us
            if latency_us > window.latency_high:
                window.latency_high = latency_us
            if label is not None and rows == 1:  # a true label speaks for one row
                window.labelled += 1
                if prediction.labels is not None and str(prediction.labels[0]) == label:
                    window.correct += 1
            return bool(window.flush_at) and self._due(window)

    def _fold(self) -> None:
        """Count the appended calls into the open window (under the lock)."""
        calls = self._calls
        n = len(calls)
        if not n:
            return
        folded = calls[:n]
        del calls[:n]  # exactly those: calls appended since stay for the next fold
        window = self._window
        rows = np.fromiter((c[0] for c in folded), dtype=np.int64, count=n)
        latency = np.fromiter((c[1] for c in folded), dtype=np.float64, count=n)
        window.inferences += int(rows.sum())
        buckets = np.bincount(np.searchsorted(_LATENCY_BOUNDS, latency, side="left"), minlength=len(window.latency))
        window.latency = [a + b for a, b in zip(window.latency, buckets.tolist(), strict=True)]
        window.latency_low = min(window.latency_low, float(latency.min()))
        window.latency_high = max(window.latency_high, float(latency.max()))

    def record_error(self, latency_us: float | None = None) -> bool:
        """Count a failed call; True when it fills a new model's first window."""
        with self._lock:
            self._window.errors += 1
            if latency_us is not None:
                self._window.add_latency(latency_us)
            return bool(self._window.flush_at) and self._due(self._window)

    @staticmethod
    def _due(window: _Window) -> bool:
        if window.inferences + window.errors < window.flush_at:
            return False
        window.flush_at = 0  # said once: the flush that follows opens an ordinary window
        return True

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
            self._fold()
            window, self._window = self._window, _Window(end_ms, next_serving)
            self._seen = 0
            if next_serving is not None and next_serving is not window.serving:  # a model swapped in
                self._window.flush_at = self.first_window_rows
            self._closed_inferences += window.inferences
            self._closed_errors += window.errors
        if window.serving is None and window.inferences == 0 and window.errors == 0:
            return None
        window.drain()
        self.flagged = (window.serving, window.bins, over_filled(window))
        message = pb.TelemetryWindow(
            schema_version=SCHEMA_VERSION,
            device_id=self.device_id,
            seq=seq,
            window_start_ms=window.start_ms,
            window_end_ms=end_ms,
            inference_count=window.inferences,
            error_count=window.errors,
            latency_bins=sparse_pairs(window.latency),
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
        if window.serving is not None:  # named, not described: the artifact (sha256, runtime) is in ReportedState
            ref = window.serving.ref
            message.model.CopyFrom(pb.ModelRef(model_id=ref.model_id, version=ref.version, sequence=ref.sequence))
        if window.bins is not None and window.feature_counts is not None:
            sketches = window.bins.split(window.feature_counts)
            message.feature_counts_implied.extend(pack_features_implied(sketches, window.sketched))
        if window.confidence is not None and window.confidence.any():
            message.confidence_counts.extend(window.confidence.tolist())
        if window.label_positives is not None and window.label_rows:
            message.label_counts.extend([window.label_rows, *window.label_positives.tolist()])
        if window.predictions is not None:
            message.predictions.counts.extend(window.predictions.tolist())
            if window.class_labels:
                message.predictions.labels.extend(window.class_labels)
            elif window.value_edges is not None:
                message.predictions.bin_edges.extend(window.value_edges.tolist())
        return message
