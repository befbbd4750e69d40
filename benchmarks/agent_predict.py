"""The agent's own cost per predict call (telemetry record, sampler, shadow offer) against the bare runtime,
for this tree and a baseline revision side by side in one run.

    .venv/bin/python benchmarks/agent_predict.py [--baseline HEAD] [--calls 4000] [--rounds 6]

The digits MLP (64 features, 10 classes, ONNX) is built and installed once (benchmarks/agent.py's build).
Each round runs one child per tree (the baseline extracted with `git archive`), alternating, so both see
the same neighbours' load. A child alternates bare `load_model(...).predict` and `agent.infer` call by call
at batch 1 and 64, in two phases of the telemetry window: `exact` (the first 1024 rows of a window, every
row sketched: the window is closed every 1024 rows) and `thin` (past them, every k-th row). It reports
medians per call; the parent reports per tree the median over rounds of agent / bare and agent - bare (µs).
Then, in one process, the baseline's Telemetry.record (its telemetry.py loaded from git) against this tree's,
32 calls of one row each in turn, in both phases: ns per call, medians and means, and their ratios.
Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("exact", "thin")
BATCHES = (1, 64)


def child(paths_file: str, calls: int) -> int:
    import pickle
    import statistics

    import numpy as np
    from agent import bench_agent  # benchmarks/agent.py, next to this file: the agent of the tree on PYTHONPATH

    x_test, paths = pickle.loads(Path(paths_file).read_bytes())
    agent, bare = bench_agent(paths)
    try:
        x = np.asarray(x_test, dtype=np.float32)
        out: dict[str, Any] = {}
        for rows in BATCHES:
            batches = [x[i : i + rows] for i in range(0, len(x) - rows, rows)][:64]
            for phase in PHASES:
                agent.flush_telemetry()
                if phase == "thin":  # past the exact rows of the window, and some way into the thinning
                    for i in range(max(1, 4096 // rows)):
                        agent.infer(batches[i % len(batches)])
                bare_us, agent_us = [], []
                for i in range(calls):
                    if phase == "exact" and (i * rows) % 1024 < rows:
                        agent.flush_telemetry()
                    batch = batches[i % len(batches)]
                    t0 = time.perf_counter()
                    bare.predict(batch)
                    t1 = time.perf_counter()
                    agent.infer(batch)
                    t2 = time.perf_counter()
                    bare_us.append((t1 - t0) * 1e6)
                    agent_us.append((t2 - t1) * 1e6)
                b, a = statistics.median(bare_us), statistics.median(agent_us)
                out[f"b{rows}_{phase}"] = {"bare_us": b, "agent_us": a}
        print(json.dumps(out))
        return 0
    finally:
        agent.stop()


def record_side_by_side(paths_file: Path, baseline: str, samples: int = 2000) -> dict[str, Any]:
    """ns per Telemetry.record of one row, the baseline's module against this tree's, interleaved."""
    import pickle
    import statistics
    import subprocess
    import types

    import numpy as np
    from agent import bench_agent  # benchmarks/agent.py

    from edge_agent.serving import telemetry

    show = ["git", "show", f"{baseline}:edge_agent/serving/telemetry.py"]
    source = subprocess.run(show, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    old = types.ModuleType("baseline_telemetry")
    sys.modules[old.__name__] = old  # dataclasses look their module up
    exec(compile(source, "baseline_telemetry.py", "exec"), old.__dict__)  # noqa: S102 - our own file, from git
    x_test, paths = pickle.loads(paths_file.read_bytes())
    agent, _bare = bench_agent(paths)
    try:
        serving = agent.serving
        assert serving is not None
        x = np.asarray(x_test, dtype=np.float32)
        rows = [x[i : i + 1] for i in range(32)]
        predictions = [serving.model.predict(r) for r in rows]
        candidates = {"baseline": old.Telemetry("d", 0, serving), "this": telemetry.Telemetry("d", 0, serving)}
        out: dict[str, Any] = {}
        for phase in PHASES:
            ns: dict[str, list[float]] = {name: [] for name in candidates}
            opened = {name: 0 for name in candidates}  # total_inferences when the window opened
            for _ in range(samples):
                for name, tel in candidates.items():
                    seen = tel.total_inferences - opened[name]  # the window's rows (the API: either revision)
                    if (phase == "exact" and seen + 32 > 1024) or (phase == "thin" and seen < 4096):
                        tel.close_window(0, 1, serving)
                        opened[name] = tel.total_inferences
                        for i in range(4096 if phase == "thin" else 0):
                            tel.record(serving, rows[i % 32], predictions[i % 32], 30.0)
                    t0 = time.perf_counter()
                    for i in range(32):
                        tel.record(serving, rows[i], predictions[i], 30.0)
                    ns[name].append((time.perf_counter() - t0) / 32 * 1e9)
            base, this = statistics.median(ns["baseline"]), statistics.median(ns["this"])
            # the mean too: work done once every n calls (a drain, a fold) is in it, not in the median
            base_mean, this_mean = statistics.fmean(ns["baseline"]), statistics.fmean(ns["this"])
            out[phase] = {"baseline_ns": round(base), "this_ns": round(this), "ratio": round(this / base, 3),
                          "baseline_mean_ns": round(base_mean), "this_mean_ns": round(this_mean),
                          "mean_ratio": round(this_mean / base_mean, 3)}  # fmt: skip
            print(f"record  {phase:<6} baseline {base:.0f} ns, this {this:.0f} ns, x{this / base:.3f}; mean "
                  f"{base_mean:.0f} / {this_mean:.0f} ns, x{this_mean / base_mean:.3f}", file=sys.stderr)  # fmt: skip
        return out
    finally:
        agent.stop()


def run_child(tree: Path, paths_file: Path, calls: int) -> dict[str, Any]:
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(tree)}
    script = tree / "benchmarks" / "agent_predict.py"
    if not script.exists():  # a baseline from before this benchmark: run this file against its code
        script = Path(__file__).resolve()
    done = subprocess.run([sys.executable, str(script), "--child", str(paths_file), "--calls", str(calls)],
                          env=env, cwd=tree, capture_output=True, text=True, check=True, timeout=600)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare this tree with")
    parser.add_argument("--calls", type=int, default=4000, help="per batch size and phase, in each child")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path[:0] = [os.environ.get("PYTHONPATH", str(ROOT))]
        return child(args.child, args.calls)
    import io
    import pickle
    import statistics
    import subprocess
    import tarfile
    import tempfile

    sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]
    from agent import build  # benchmarks/agent.py

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        split, _manifest, _broker, paths = build(tmp)
        paths_file = tmp / "paths.pkl"
        paths_file.write_bytes(pickle.dumps((split.X_test, {k: str(v) for k, v in paths.items()})))
        base = tmp / "baseline"
        base.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline], cwd=ROOT, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(base, filter="data")
        trees = {"baseline": base, "this": ROOT}
        seen: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for r in range(args.rounds):
            for name, tree in (trees.items() if r % 2 == 0 else reversed(trees.items())):
                seen[name].append(run_child(tree, paths_file, args.calls))
        record = record_side_by_side(paths_file, args.baseline)
    results: dict[str, Any] = {"baseline": args.baseline, "rounds": args.rounds, "calls": args.calls, "record": record}
    for name, runs in seen.items():
        for key in runs[0]:
            ratio = statistics.median(run[key]["agent_us"] / run[key]["bare_us"] for run in runs)
            extra = statistics.median(run[key]["agent_us"] - run[key]["bare_us"] for run in runs)
            bare = statistics.median(run[key]["bare_us"] for run in runs)
            figures = {"ratio": round(ratio, 3), "extra_us": round(extra, 2), "bare_us": round(bare, 1)}
            results[f"{name}_{key}"] = figures
            print(f"{name:<8} {key:<9} agent/bare x{ratio:.3f}  +{extra:.2f} µs (bare {bare:.1f} µs)", file=sys.stderr)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
