"""The demo's data, measured: does its retrain see the rows it is judged on, and what are its figures?

Runs `edgefleet demo` in this process (5 devices, 200 inferences each, the defaults) once per seed (the
seed offsets the devices' streams), then reads the demo's database and artifact store back:

  overlap       rows (by float32 content) of the challenger's field train part that are also reference
                held-out rows, or field eval rows; and field eval rows that are the same digit (the same
                pool row, drifted or not: matched on the undrifted features) as a field train row
  margins       the challenger's gain on held-out reference rows and on the field eval part, as judged;
                and on *fresh* field rows: the pool rows no device sent back for training, as a drifted
                and as a baseline device sees them (neither model trained on them)
  accuracy      drifted and baseline devices' field accuracy (from the labels sent back) before and after
  false flags   baseline devices any of whose features the v1 drift report flags (should be none)

    PYTHONPATH=$PWD .venv/bin/python benchmarks/demo_data.py [--seeds 3]

Runs on the code on PYTHONPATH (the same script measured the code of before). Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _run_demo(data_dir: Path, seed: int) -> tuple[int, float]:
    import simulator.labeller as labeller
    from cloud.cli.demo import run_demo

    original = labeller.LabelledStream

    class Seeded(original):  # type: ignore[misc,valid-type]
        def __post_init__(self) -> None:
            self.seed += 1000 * seed
            super().__post_init__()

    labeller.LabelledStream = Seeded  # type: ignore[misc]
    started = time.perf_counter()
    try:
        args = argparse.Namespace(devices=5, data_dir=data_dir, mqtt_url=None, database_url=None, inferences=200,
                                  estimator="logreg", drift=3.0, retrain=True)  # fmt: skip
        code = run_demo(args)
    finally:
        labeller.LabelledStream = original  # type: ignore[misc]
    return code, time.perf_counter() - started  # a canary rolled back (exit 1) still has a challenger to measure


def _keys(X: np.ndarray, cols: list[int]) -> list[bytes]:
    return [np.ascontiguousarray(row[cols], dtype=np.float32).tobytes() for row in X]


def _measure(data_dir: Path) -> dict[str, Any]:
    from sqlmodel import Session, select

    from cloud import monitoring, registry
    from cloud.db import make_engine
    from cloud.db.tables import Candidate
    from cloud.monitoring import feedback
    from cloud.registry import LocalArtifactStore, field_data
    from cloud.settings import CloudSettings
    from cloud.training.evaluation import predict_labels
    from cloud.training.pipeline import load_dataset
    from simulator.data import Drift

    settings = CloudSettings(data_dir=data_dir)
    engine = make_engine(settings.database)
    store = LocalArtifactStore(settings.artifacts_dir)  # type: ignore[arg-type]
    model = "digits-classifier"
    with Session(engine) as session:
        v1 = registry.get_model_version(session, model, "1")
        params = registry.get_run(session, v1.run_id).parameters  # type: ignore[arg-type]
        pool_size = float(params.get("pool_size", 0.0))
        kwargs = {"pool_size": pool_size} if pool_size else {}
        split = load_dataset("digits", test_size=float(params["test_size"]), seed=int(params["seed"]), **kwargs)
        X_pool, y_pool = (split.X_pool, split.y_pool) if pool_size else (split.X_test, split.y_test)
        candidate = session.exec(select(Candidate).where(Candidate.version == "2")).one()
        document = json.loads(store.get(candidate.id))
        field_train = field_data.load(session, store, document["datasets"]["field_train"]).rows
        field_eval = field_data.load(session, store, document["datasets"]["field_eval"]).rows
        manifests = {v: registry.manifest_of(registry.get_model_version(session, model, v)) for v in ("1", "2")}
        blobs = {v: {a.name: store.get(a.sha256) for a in m.artifacts} for v, m in manifests.items()}
        devices = [f"demo-{i:02d}" for i in range(1, 6)]
        drifted = set(devices[1::2])
        flagged = [d for d in devices if d not in drifted and any(
            f.drifted for f in monitoring.device_drift(session, d, model_id=model, version="1").features)]
        accuracy = {}
        for version in ("1", "2"):
            lines = {x.key: x for x in feedback.field_accuracy(session, model, version, by="device")}
            for site, members in (("drifted", drifted), ("baseline", set(devices) - drifted)):  # labelled rows
                right = sum((lines[d].accuracy or 0) * lines[d].labelled for d in members if d in lines)
                n = sum(lines[d].labelled for d in members if d in lines)
                accuracy[f"{site}_v{version}"] = round(right / n, 4) if n else None
    drift_features = [int(i) for i in np.argsort(-split.X_train.std(axis=0))[:6]]
    undrifted = [j for j in range(X_pool.shape[1]) if j not in drift_features]
    held_out = set(_keys(split.X_test, list(range(X_pool.shape[1]))))
    train_X = np.asarray([r.input for r in field_train], dtype=np.float32)
    eval_X = np.asarray([r.input for r in field_eval], dtype=np.float32)
    all_cols = list(range(X_pool.shape[1]))
    train_rows, eval_rows = set(_keys(train_X, all_cols)), _keys(eval_X, all_cols)
    train_digits = set(_keys(train_X, undrifted))
    fresh = np.array([k not in train_digits for k in _keys(X_pool, undrifted)])
    std = np.where(X_pool.std(axis=0) > 0, X_pool.std(axis=0), 1.0)  # as DataStream computes it
    truth = [str(v) for v in y_pool[fresh]]
    fresh_gain = {}
    for site, X in (("drifted", Drift(tuple(drift_features), shift=3.0).apply(X_pool[fresh], std)),
                    ("baseline", X_pool[fresh])):  # fmt: skip
        share = {v: np.mean([p == t for p, t in zip(predict_labels(manifests[v], blobs[v], X), truth, strict=True)])
                 for v in ("1", "2")}  # fmt: skip
        fresh_gain[site] = {"v1": round(float(share["1"]), 4), "v2": round(float(share["2"]), 4),
                            "gain": round(float(share["2"] - share["1"]), 4)}  # fmt: skip
    judgement = candidate.judgement
    return {
        "field_train_rows": len(field_train), "field_eval_rows": len(field_eval),
        "field_train_in_reference_heldout": len(train_rows & held_out),
        "field_eval_in_field_train": sum(k in train_rows for k in eval_rows),
        "field_eval_same_digit_as_field_train": sum(k in train_digits for k in _keys(eval_X, undrifted)),
        "reference_gain": round(judgement["reference"]["challenger_correct"] / judgement["reference"]["n"]
                                - judgement["reference"]["champion_correct"] / judgement["reference"]["n"], 4),
        "field_eval_gain": round((judgement["field"]["challenger_correct"] - judgement["field"]["champion_correct"])
                                 / judgement["field"]["n"], 4),
        "fresh_pool_rows": int(fresh.sum()), "fresh": fresh_gain,
        "accuracy": accuracy, "baseline_devices_flagged": flagged,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("COLUMNS", "120")
    runs = []
    for seed in range(args.seeds):
        data_dir = Path(tempfile.mkdtemp(prefix=f"edgefleet-demo-data-{seed}-"))
        code, elapsed = _run_demo(data_dir, seed)
        runs.append({"seed": seed, "demo_exit": code, "demo_s": round(elapsed, 1), **_measure(data_dir)})
        print(json.dumps(runs[-1]), flush=True)
    print(json.dumps({"runs": runs, "loadavg": Path("/proc/loadavg").read_text().split()[:3]}))


if __name__ == "__main__":
    main()
