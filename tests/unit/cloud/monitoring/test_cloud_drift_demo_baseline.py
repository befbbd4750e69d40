"""Why the demo once named a baseline device (demo-01, f53) as drifted, and that it no longer can.

The demo's devices draw their rows (with replacement) from a pool of 540 digits set apart from the training
and held-out rows (so a retrain on what they send back has not seen the rows it is judged on); a reference
profile of the training rows would make every device share the pool's own chance deviation from them, and
the fleet's 1,000 rows are resamples of 540: the two-sample tests, which take each row as a fresh draw from
the reference's population, see that as drift. A profile of the rows the devices draw from
(`TrainingConfig(profile_from="pool")`, as the demo trains) leaves the baseline devices clean; the injected
drift is still found. The demo's setting: 5 devices x 200 rows, 2 of them shifted 3 std on 6 features,
windows, devices and the fleet's sum in one family, as `summaries.drift_report` tests them."""

from __future__ import annotations

import numpy as np

from cloud.cli.demo import POOL_SIZE, TEST_SIZE
from cloud.monitoring import detector
from cloud.training.pipeline import load_dataset
from model_compiler.profile import bin_index, feature_edges
from simulator.data import DataStream, Drift

SPLIT = load_dataset("digits", test_size=TEST_SIZE, seed=0, pool_size=POOL_SIZE)  # the demo's split
SHIFTED = tuple(int(i) for i in np.argsort(-SPLIT.X_train.std(axis=0))[:6])  # the demo's drifted features
RUNS = 30


def _counts(edges: np.ndarray, column: np.ndarray) -> np.ndarray:
    return np.bincount(bin_index(edges, column.astype(np.float64)), minlength=len(edges) - 1).astype(float)


def _one_demo(profiled: np.ndarray, seed: int) -> tuple[bool, bool]:
    """(a baseline device flagged, every drifted device flagged) for one demo-like report."""
    edges = [feature_edges(profiled[:, j].astype(np.float64)) for j in range(64)]
    reference = {j: _counts(edges[j], profiled[:, j]).tolist() for j in range(64)}
    samples: list[detector.Sample] = []
    fleet = {j: np.zeros(len(reference[j])) for j in range(64)}
    for d in range(5):
        drift = Drift(SHIFTED, shift=3.0) if d in (1, 3) else Drift()
        X, _ = DataStream(SPLIT.X_pool, SPLIT.y_pool, seed=seed * 10 + d, drift=drift).batch(200)
        for j in range(64):
            counts = _counts(edges[j], X[:, j])
            fleet[j] += counts
            samples += [detector.Sample("window", f"d{d}", 1, j, counts),
                        detector.Sample("device", f"d{d}", None, j, counts)]
    samples += [detector.Sample("fleet", None, None, j, fleet[j]) for j in range(64)]
    flagged = {f.device_id for f in detector.detect(reference, samples) if f.drifted and f.device_id}
    return bool(flagged & {"d0", "d2", "d4"}), {"d1", "d3"} <= flagged


def test_a_profile_of_the_rows_the_devices_draw_from_leaves_the_baseline_devices_clean() -> None:
    pool = [_one_demo(SPLIT.X_pool, seed) for seed in range(RUNS)]
    assert sum(baseline for baseline, _ in pool) <= 1  # at most one report in 30 names a baseline device
    assert all(found for _, found in pool)  # and every report finds both drifted devices
    # the cause: a profile of other rows (training: 3 of 30, held-out: 4 of 30) names a baseline device
    for other in (SPLIT.X_train, SPLIT.X_test):
        assert sum(baseline for baseline, _ in (_one_demo(other, seed) for seed in range(RUNS))) >= 3
