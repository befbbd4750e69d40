"""The agent's sampler: what it costs on the predict path, how well it keeps a daily byte budget, and how the
cloud's Horvitz-Thompson estimate undoes its favouring, side by side in one run.

    .venv/bin/python benchmarks/sampler.py [--calls 200000] [--seed 0]

  per call    ns per offer() of one 64-feature row, alternating the candidates call by call (the machine is
              shared): uniform (favour 1, the odds of the sampler before favouring), favouring (favour 4
              for top-class probability < 0.7), favouring + flagged bins (the telemetry's over-filled bins)
  budget      a simulated UTC day of 1,440 one-minute windows with traffic rising 10x through the day and a
              2 MB budget: bytes shipped, the share of the budget, the largest window, samples kept
  accuracy    a fleet whose unsure rows (20 %) are right half the time and the rest 95 %: the plain mean of
              the labelled sample against the weighted (Hajek) one and the truth, over 200 seeds
  hinted      a quiet device (200 rows a minute) whose feature 3 drifted 0.5 sigma: the cloud's hint
              (cloud.monitoring.hints.hinted_bins over its first 30 windows) against the device's own flags
              (a bin twice its reference share, 10 rows at least, per window) and no favouring, over the
              next 30 windows at the same base odds: the share of samples in the hinted bins, and the
              Horvitz-Thompson estimate of the rows in them against the truth
Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from cloud.monitoring.feedback import summarise  # noqa: E402
from cloud.monitoring.hints import hinted_bins  # noqa: E402
from edge_agent.serving.sample_budget import DAY_MS, DailyBudget  # noqa: E402
from edge_agent.serving.sampler import Sampler  # noqa: E402
from edge_agent.serving.telemetry import OVERFILL_MIN_COUNT, OVERFILL_RATIO, FeatureBins  # noqa: E402
from protocols.v1 import messages_pb2 as pb  # noqa: E402

N_FEATURES = 64


def _serving(normal: bool = False) -> Any:
    """64 features binned over -3..3 (10 bins); counts uniform, or (normal) those of N(0, 1) rows."""
    edges = np.linspace(-3, 3, 11)
    counts = [100] * 10
    if normal:
        cdf = np.asarray([0.5 * (1 + math.erf(e / math.sqrt(2))) for e in edges])
        cdf[0], cdf[-1] = 0.0, 1.0  # the end bins take what lies outside
        counts = [int(c) for c in np.round(np.diff(cdf) * 100_000)]
    reference = pb.ReferenceProfile()
    for i in range(N_FEATURES):
        reference.features.add(index=i, bin_edges=list(edges), counts=counts)
    manifest = pb.Manifest(model_id="bench", version="1", reference=reference)
    return SimpleNamespace(manifest=manifest, ref=pb.ModelRef(model_id="bench", version="1"), n_features=N_FEATURES)


def _prediction(x: np.ndarray, rng: np.random.Generator) -> Any:
    p = np.where(rng.random(len(x)) < 0.2, 0.6, 0.97).astype(np.float32)
    return SimpleNamespace(labels=["a"] * len(x), values=None, scores=np.stack([p, 1 - p], axis=1))


def per_call(calls: int, seed: int) -> dict[str, float]:
    serving = _serving()
    rng = np.random.default_rng(seed)
    rows = [rng.normal(size=(1, N_FEATURES)).astype(np.float32) for _ in range(256)]
    predictions = [_prediction(x, rng) for x in rows]
    bins = FeatureBins.of(serving.manifest.reference.features)
    assert bins is not None
    flagged = np.zeros(bins.total, dtype=bool)
    flagged[bins.offsets[3] + 9] = True  # the top bin of feature 3
    samplers = {
        "uniform": Sampler(0.01, 1 << 30, random.Random(seed)),
        "favouring": Sampler(0.01, 1 << 30, random.Random(seed), favour=4.0, low_confidence=0.7),
        "favouring_flagged": Sampler(0.01, 1 << 30, random.Random(seed), favour=4.0, low_confidence=0.7),
    }
    samplers["favouring_flagged"].flag_bins(serving, bins, flagged)
    timings: dict[str, list[int]] = {name: [] for name in samplers}
    clock = time.perf_counter_ns
    for i in range(calls):
        x, prediction = rows[i % 256], predictions[i % 256]
        for name, sampler in samplers.items():
            t = clock()
            sampler.offer(serving, x, prediction, None, lambda: 0)
            timings[name].append(clock() - t)
    return {f"{name}_ns": round(statistics.median(v), 1) for name, v in timings.items()} | {
        f"{name}_mean_ns": round(statistics.fmean(v), 1) for name, v in timings.items()
    }


def budget_day(seed: int, budget_bytes: int = 2_000_000) -> dict[str, Any]:
    serving = _serving()
    rng = np.random.default_rng(seed)
    budget = DailyBudget(budget_bytes)
    sampler = Sampler(1.0, 1 << 30, random.Random(seed), budget=budget, window_ms=60_000, favour=4.0,
                      low_confidence=0.7)  # fmt: skip
    start = 1_780_000_000_000 - 1_780_000_000_000 % DAY_MS
    shipped, largest, kept = 0, 0, 0
    for w in range(1440):
        rows = int(200 + 1800 * w / 1440)  # 200 rows a minute at midnight, 2,000 by the end of the day
        x = rng.normal(size=(rows, N_FEATURES)).astype(np.float32)
        sampler.offer(serving, x, _prediction(x, rng), None, lambda: start)
        batch = sampler.drain("dev", w, start + (w + 1) * 60_000 - 1)
        size = batch.ByteSize() if batch is not None else 0
        shipped, largest, kept = shipped + size, max(largest, size), kept + (len(batch.samples) if batch else 0)
    return {
        "budget_bytes": budget_bytes, "shipped_bytes": shipped, "share_of_budget": round(shipped / budget_bytes, 3),
        "largest_window_bytes": largest, "samples": kept, "windows_capped": sampler.truncated,
    }  # fmt: skip


def accuracy(seeds: int) -> dict[str, Any]:
    plain, weighted, covered = [], [], 0
    truth = 0.2 * 0.5 + 0.8 * 0.95
    for seed in range(seeds):
        rng = random.Random(seed)
        triples: list[tuple[str, str, str, float | None]] = []
        for unsure in (rng.random() < 0.2 for _ in range(20_000)):
            p = 0.04 if unsure else 0.01  # favour 4 over a base of 1 %
            if rng.random() < p:
                right = rng.random() < (0.5 if unsure else 0.95)
                triples.append(("v", "a", "a" if right else "b", p))
        (line,) = summarise(triples)
        assert line.accuracy is not None and line.weighted is not None
        plain.append(line.accuracy)
        weighted.append(line.weighted)
        covered += (line.weighted_low or 0) <= truth <= (line.weighted_high or 1)
    return {
        "truth": truth, "plain_mean": round(statistics.fmean(plain), 4),
        "weighted_mean": round(statistics.fmean(weighted), 4), "weighted_interval_coverage": covered / seeds,
    }  # fmt: skip


def hinted(seed: int, rows: int = 200, windows: int = 30, shift: float = 0.5) -> dict[str, Any]:
    serving = _serving(normal=True)
    reference = serving.manifest.reference
    bins = FeatureBins.of(reference.features)
    assert bins is not None
    rng = np.random.default_rng(seed)

    def window() -> np.ndarray:
        x = rng.normal(size=(rows, N_FEATURES)).astype(np.float32)
        x[:, 3] += shift
        return x

    seen = np.zeros(bins.total)
    for _ in range(windows):  # what the cloud reads over the alert's lookback
        seen += bins.count(window())
    counts = {i: seen[o : o + n].tolist() for i, o, n in zip(bins.indexes, bins.offsets, bins.sizes, strict=True)}
    hint_bins = hinted_bins(reference, counts, [3])
    hint = pb.SamplerHint(model=serving.ref, features=[f for f, _ in hint_bins], bins=[k for _, k in hint_bins])
    share = np.concatenate([np.asarray(p.counts, dtype=float) / sum(p.counts) for p in reference.features])
    candidates = {"uniform": 1.0, "own_flags": 4.0, "own_flags_and_hint": 4.0}
    samplers = {name: Sampler(0.05, 1 << 30, random.Random(seed), favour=f) for name, f in candidates.items()}
    samplers["own_flags_and_hint"].hint(hint, 1 << 62, serving)  # type: ignore[arg-type]
    lows = [float(bins.padded[3, k - 1]) if k else -math.inf for _, k in hint_bins]
    highs = [float(bins.padded[3, k]) if k < bins.sizes[3] - 1 else math.inf for _, k in hint_bins]

    def in_hint(v: float) -> bool:
        return any(lo <= v < hi for lo, hi in zip(lows, highs, strict=True))

    kept: dict[str, list[pb.Sample]] = {name: [] for name in samplers}
    truth = 0
    for w in range(windows):
        x = window()
        truth += sum(in_hint(float(v)) for v in x[:, 3])
        prediction = _prediction(x, rng)
        for name, sampler in samplers.items():
            sampler.offer(serving, x, prediction, None, lambda: 0)  # type: ignore[arg-type]
            batch = sampler.drain("dev", w)
            kept[name] += list(batch.samples) if batch is not None else []
            own = bins.count(x)  # the device's own rule for its next window (edge_agent.serving.telemetry)
            flagged = (own >= OVERFILL_MIN_COUNT) & (own / rows >= OVERFILL_RATIO * share)
            if name != "uniform":
                sampler.flag_bins(serving, bins, flagged)  # type: ignore[arg-type]
    result: dict[str, Any] = {"hinted_bins": [list(b) for b in hint_bins], "rows_in_hinted_bins": truth,
                              "rows": rows * windows}  # fmt: skip
    for name, samples in kept.items():
        inside = [s for s in samples if in_hint(s.input[3])]
        result[name] = {
            "samples": len(samples), "in_hinted_bins": len(inside),
            "share_in_hinted_bins": round(len(inside) / max(len(samples), 1), 3),
            "ht_rows_in_hinted_bins": round(sum(1 / s.inclusion_probability for s in inside)),
        }  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for name, run in (
        ("per_call", lambda: per_call(args.calls, args.seed)),
        ("budget_day", lambda: budget_day(args.seed)),
        ("accuracy", lambda: accuracy(200)),
        ("hinted", lambda: hinted(args.seed)),
    ):
        t = time.perf_counter()
        results[name] = run()
        print(f"{name}: {time.perf_counter() - t:.1f} s  {json.dumps(results[name])}", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
