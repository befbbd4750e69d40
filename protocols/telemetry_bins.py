"""The fixed latency buckets of a TelemetryWindow and its compact encoding, for writers and readers alike.

A window is mostly counts. The compact fields (`latency_bins`, `feature_counts`, see messages.proto) drop
what the reader already knows (the latency bounds are fixed) and what carries nothing (empty buckets,
features with no counts), so a window of a 64-feature model fits in about 1 KB. Readers accept both forms.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from protocols.v1 import messages_pb2 as pb

# log-spaced, 10 per decade, 10 µs .. 10 s; the last bucket is open-ended
LATENCY_BOUNDS_US: tuple[float, ...] = tuple(round(10 ** (1 + i / 10), 3) for i in range(61))

# The bins of a classifier's top-class probability (confidence drift): finer near 1, where a confident
# model puts most rows and where a drop shows first. The compiler writes them into the manifest's
# reference.confidence; agents count over the manifest's edges, so these can change without an agent update.
CONFIDENCE_EDGES: tuple[float, ...] = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def sparse_pairs(counts: Sequence[int]) -> list[int]:
    """[bucket, count, ...] of the non-empty buckets."""
    pairs: list[int] = []
    for bucket, count in enumerate(counts):
        if count:
            pairs += (bucket, int(count))
    return pairs


def pack_features(sketches: Iterable[tuple[int, Sequence[int]]]) -> list[int]:
    """Per feature with any count: a header n_bins * 2 + (1 if its index is not the previous one's + 1),
    the index only then, and its counts; concatenated. Indexes mostly follow on: a byte saved per feature."""
    flat: list[int] = []
    expected = 0
    for index, counts in sketches:
        if any(counts):
            jumped = index != expected
            flat += (len(counts) * 2 + jumped, *((index,) if jumped else ()), *counts)
            expected = index + 1
    return flat


def pack_features_implied(sketches: Iterable[tuple[int, Sequence[int]]], rows: int) -> list[int]:
    """[rows, then per feature with any count: a header n_sent * 4 + implied * 2 + jumped, the index only
    after a gap, the sent counts]. A feature whose counts add up to `rows` leaves its last bin out (the
    reader works it out): a varint or two saved per feature."""
    flat: list[int] = [rows]
    expected = 0
    for index, counts in sketches:
        if any(counts):
            jumped = index != expected
            implied = len(counts) >= 2 and sum(counts) == rows
            sent = counts[:-1] if implied else counts
            flat += (len(sent) * 4 + implied * 2 + jumped, *((index,) if jumped else ()), *sent)
            expected = index + 1
    return flat


def latency_histogram(w: pb.TelemetryWindow) -> tuple[list[float], list[int]]:
    """(bounds, counts) of a window in either encoding."""
    if w.latency_bins:
        counts = [0] * (len(LATENCY_BOUNDS_US) + 1)
        pairs = list(w.latency_bins)
        for bucket, count in zip(pairs[::2], pairs[1::2], strict=False):
            if bucket < len(counts):
                counts[bucket] += count
        return list(LATENCY_BOUNDS_US), counts
    return list(w.latency_us.bounds), list(w.latency_us.counts)


def feature_sketches(w: pb.TelemetryWindow) -> dict[int, list[int]]:
    """{feature index: counts} of a window in either encoding (a truncated compact list ends early)."""
    found = {f.index: list(f.counts) for f in w.features}
    flat, at, index = list(w.feature_counts), 0, 0
    while at < len(flat):
        size, jumped = divmod(flat[at], 2)
        at += 1
        if jumped:
            if at >= len(flat):
                break
            index, at = flat[at], at + 1
        found[index] = flat[at : at + size]
        at, index = at + size, index + 1
    implied_flat = list(w.feature_counts_implied)
    rows, at, index = (implied_flat[0] if implied_flat else 0), 1, 0
    while at < len(implied_flat):
        header = implied_flat[at]
        size, implied, jumped = header // 4, header // 2 % 2, header % 2
        at += 1
        if jumped:
            if at >= len(implied_flat):
                break
            index, at = implied_flat[at], at + 1
        counts = implied_flat[at : at + size]
        found[index] = [*counts, max(rows - sum(counts), 0)] if implied else counts
        at, index = at + size, index + 1
    return found
