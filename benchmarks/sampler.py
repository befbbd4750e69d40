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
Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
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
from edge_agent.serving.sample_budget import DAY_MS, DailyBudget  # noqa: E402
from edge_agent.serving.sampler import Sampler  # noqa: E402
from edge_agent.serving.telemetry import FeatureBins  # noqa: E402
from protocols.v1 import messages_pb2 as pb  # noqa: E402

N_FEATURES = 64


def _serving() -> Any:
    reference = pb.ReferenceProfile()
    for i in range(N_FEATURES):
        reference.features.add(index=i, bin_edges=list(np.linspace(-3, 3, 11)), counts=[100] * 10)
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
    ):
        t = time.perf_counter()
        results[name] = run()
        print(f"{name}: {time.perf_counter() - t:.1f} s  {json.dumps(results[name])}", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
