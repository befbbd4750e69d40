"""Drift monitoring, measured on the product's own path: the compiler's reference profile -> the agent's
telemetry windows (edge_agent.serving.telemetry, serialized as on the wire) -> ingestion rows
(cloud.monitoring.ingest.telemetry_row) -> the cloud's verdicts (cloud.monitoring.summaries.drift_report,
what device_drift / fleet_drift compute once the rows are read back). The rule before the detector
(PSI >= 0.25, or PSI >= 0.1 with a one-sample chi-square under BH) runs on the same rows, side by side.

    .venv/bin/python benchmarks/drift.py [--reps 10] [--reference-rows 5000] [--quick]

Data: 64 features, 48 standard normal and 16 that are 94 % zero (the rest integers 1..16, like digits'
border pixels); a classifier labels x0 + x1 > 0 (and scores it, so windows carry a confidence
histogram); 50 devices. Scenarios:
  clean        1,000 windows of 50..500 rows (50 devices x 20): a report per window (what a device check
               sees), one fleet report over all of them, and 200 windows each at 50, 100 and 300 rows
  one device   a 0.5 sigma shift of one feature on one of 50 devices: flagged in its first window of 500
               rows? where does that device rank in the fleet report's attribution?
  power        one device, shift s in one feature, windows of 500 rows added one by one, a device
               report after each: the first window count that flags the feature (20 at most)
  few devices  2 of 50 devices shifted 1.5 sigma on 3 features (5 windows of 500 rows each): a fleet alert
               naming those two?
  confidence   one device whose x0 and x1 become negatively correlated (rho): every feature's marginal is
               unchanged, so no input test can see it, but x0 + x1 crowds the decision boundary and the model's
               top-class probability drops (the classifier's scores are sigmoid(2 (x0 + x1))); windows of 500
               rows added one by one: the first window count whose report flags the device's confidence
  mass point   one device's share of non-zero values of a 94 %-zero feature goes from 6 % to 15 %
  wire         bytes of a 500-row window for 64 features, serialized
Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from statistics import median
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy.special import chdtrc  # noqa: E402

from cloud.db.tables import TelemetryRecord  # noqa: E402
from cloud.monitoring import drift, stats  # noqa: E402
from cloud.monitoring.ingest import telemetry_row  # noqa: E402
from cloud.monitoring.summaries import DriftReport, drift_report  # noqa: E402
from edge_agent.serving.slot import ServingModel  # noqa: E402
from edge_agent.serving.telemetry import Telemetry  # noqa: E402
from model_compiler.profile import confidence_profile, reference_profile  # noqa: E402
from protocols.v1 import messages_pb2 as pb  # noqa: E402

N_FEATURES, N_NORMAL, N_DEVICES = 64, 48, 50
MASS_ZERO_SHARE = 0.94
SHIFTED_FEATURE, MASS_FEATURE = 3, 50
POWER_SHIFTS = (0.1, 0.2, 0.3, 0.5, 1.0)
CONFIDENCE_RHOS = (0.2, 0.4, 0.6)
MAX_WINDOWS = 20
WINDOW_MS = 60_000


def draw(
    rng: np.random.Generator, rows: int, shift: dict[int, float] | None = None, zero_share: float = 0.94,
    rho: float = 0.0,
) -> Any:  # fmt: skip
    x = np.empty((rows, N_FEATURES))
    x[:, :N_NORMAL] = rng.normal(size=(rows, N_NORMAL))
    if rho:  # x1 = -rho x0 + sqrt(1 - rho^2) z: still standard normal, but x0 + x1 has variance 2 - 2 rho
        x[:, 1] = -rho * x[:, 0] + np.sqrt(1 - rho**2) * x[:, 1]
    nonzero = rng.random((rows, N_FEATURES - N_NORMAL)) >= zero_share
    x[:, N_NORMAL:] = np.where(nonzero, rng.integers(1, 17, size=nonzero.shape), 0)
    for feature, sigma in (shift or {}).items():
        x[:, feature] += sigma
    return x.astype(np.float32)


def labels(x: np.ndarray) -> np.ndarray:
    return np.where(x[:, 0] + x[:, 1] > 0, "1", "0")


def scores(x: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-2.0 * (x[:, 0].astype(np.float64) + x[:, 1])))
    return np.stack([1 - p, p], axis=1).astype(np.float32)


def serving_model(reference_rows: int) -> ServingModel:
    rng = np.random.default_rng(0)
    x = draw(rng, reference_rows).astype(np.float64)
    profile = reference_profile(x, labels(x), class_labels=["0", "1"], feature_names=[f"f{i}" for i in range(64)])
    confidence = confidence_profile(scores(x))
    assert confidence is not None
    profile.confidence.CopyFrom(confidence)
    manifest = pb.Manifest(
        model_id="bench", version="1", sequence=1, reference=profile,
        io=pb.IoSchema(task=pb.TASK_CLASSIFICATION, class_labels=["0", "1"], n_features=N_FEATURES),
    )  # fmt: skip
    ref = pb.ModelRef(model_id="bench", version="1", sequence=1)
    return ServingModel(SimpleNamespace(n_features=N_FEATURES), None, manifest, ref)  # type: ignore[arg-type]


class Fleet:
    """Makes telemetry rows the way devices and ingestion do."""

    def __init__(self, serving: ServingModel, seed: int) -> None:
        self.serving, self.rng, self.seq = serving, np.random.default_rng(seed), 0
        self.bytes: list[int] = []

    def window(
        self, device: str, rows: int, shift: dict[int, float] | None = None, zero_share: float = 0.94,
        rho: float = 0.0,
    ) -> Any:  # fmt: skip
        self.seq += 1
        start = self.seq * WINDOW_MS
        telemetry = Telemetry(device, start, self.serving)
        x = draw(self.rng, rows, shift, zero_share, rho)
        telemetry.record(self.serving, x, SimpleNamespace(labels=labels(x), values=None, scores=scores(x)), 150.0)
        message = telemetry.close_window(start + WINDOW_MS, self.seq, self.serving)
        assert message is not None
        self.bytes.append(len(message.SerializeToString()))
        return TelemetryRecord(**telemetry_row(device, message, start + WINDOW_MS))


def report(serving: ServingModel, rows: Sequence[Any], device_id: str | None) -> DriftReport:
    return drift_report(serving.manifest.reference, rows, "bench", "1", device_id)


def flagged(result: DriftReport, device: str, feature: int) -> bool:
    if result.device_id is not None:
        return any(f.index == feature and f.drifted for f in result.features) or any(
            d.device_id == device and feature in d.features for d in _drivers(result)
        )
    return any(d.device_id == device and feature in d.features for d in _drivers(result))


def _drivers(result: DriftReport) -> list[Any]:
    return result.attribution.devices if result.attribution else []


# --- the rule that shipped before the detector, on the same rows -------------------------------------------


def _old_psi(reference: np.ndarray, observed: np.ndarray) -> float:
    p = np.maximum(reference / reference.sum(), 1e-4)
    q = np.maximum(observed / observed.sum(), 1e-4)
    return float(np.sum((q - p) * np.log(q / p)))


def old_rule(serving: ServingModel, rows: Sequence[Any]) -> dict[int, float]:
    """{feature: PSI} of the features the old rule flags (merged counts of `rows`)."""
    merged = drift.merge_counts({int(k): v for k, v in r.feature_counts.items()} for r in rows)
    measured = {}
    for f in serving.manifest.reference.features:
        obs = np.asarray(merged.get(f.index, []), dtype=float)
        ref = np.asarray(f.counts, dtype=float)
        if obs.size and obs.sum() > 0 and obs.size == ref.size:
            expected = np.maximum(ref / ref.sum(), 1e-4) * obs.sum()
            p_value = float(chdtrc(max(len(obs) - 1, 1), float(np.sum((obs - expected) ** 2 / expected))))
            measured[f.index] = (_old_psi(ref, obs), p_value)
    rejected = stats.fdr_reject([p for _, p in measured.values()], 0.05)
    return {
        i: value
        for (i, (value, _)), rej in zip(measured.items(), rejected, strict=True)
        if value >= 0.25 or (value >= 0.1 and rej)
    }


def old_max_psi(serving: ServingModel, rows: Sequence[Any]) -> float:
    merged = drift.merge_counts({int(k): v for k, v in r.feature_counts.items()} for r in rows)
    values = [
        _old_psi(np.asarray(f.counts, dtype=float), np.asarray(merged[f.index], dtype=float))
        for f in serving.manifest.reference.features
        if f.index in merged and sum(merged[f.index]) > 0 and len(merged[f.index]) == len(f.counts)
    ]
    return max(values, default=0.0)


# --- scenarios ----------------------------------------------------------------------------------------------


def clean(serving: ServingModel, quick: bool) -> dict[str, Any]:
    fleet = Fleet(serving, 1)
    windows = 200 if quick else 1000
    rows = [fleet.window(f"d{i % N_DEVICES:02d}", int(fleet.rng.integers(50, 501))) for i in range(windows)]
    per_window = [report(serving, [r], r.device_id).alert for r in rows]
    whole = report(serving, rows, None)
    out: dict[str, Any] = {
        "windows": windows,
        "false_alert_rate": sum(per_window) / windows,
        "false_alert_rate_old": sum(bool(old_rule(serving, [r])) for r in rows) / windows,
        "fleet_report_drifted_windows": whole.drifted_windows,
        "fleet_report_alert": whole.alert,
        "fleet_report_tests": whole.tests,
        "by_rows": {},
    }
    for size in (50, 100, 300):
        fixed = [fleet.window(f"d{i % N_DEVICES:02d}", size) for i in range(40 if quick else 200)]
        out["by_rows"][size] = {
            "new": sum(report(serving, [r], r.device_id).alert for r in fixed) / len(fixed),
            "old": sum(bool(old_rule(serving, [r])) for r in fixed) / len(fixed),
        }
    return out


def one_device(serving: ServingModel, reps: int) -> dict[str, Any]:
    found, ranks, old_found, old_ranks = [], [], [], []
    for rep in range(reps):
        fleet = Fleet(serving, 100 + rep)
        odd = f"d{(7 * rep + 3) % N_DEVICES:02d}"
        rows: list[Any] = []
        first = None
        for k in range(1, 6):
            rows += [fleet.window(d, 500, {SHIFTED_FEATURE: 0.5} if d == odd else None) for d in _devices()]
            result = report(serving, rows, None)
            if flagged(result, odd, SHIFTED_FEATURE):
                first = k
                names = [d.device_id for d in _drivers(result)]
                ranks.append(names.index(odd) + 1)
                break
        found.append(first)
        first_rows = rows[:N_DEVICES]
        odd_rows = [r for r in first_rows if r.device_id == odd]
        old_found.append(SHIFTED_FEATURE in old_rule(serving, odd_rows))
        by_psi = sorted(_devices(), key=lambda d: -old_max_psi(serving, [r for r in first_rows if r.device_id == d]))
        old_ranks.append(by_psi.index(odd) + 1)
    return {
        "windows_to_detect": found,
        "found_in_first_window": sum(f == 1 for f in found) / reps,
        "ranks": ranks,
        "old_found_in_first_window": sum(old_found) / reps,
        "old_ranks": old_ranks,
    }


def _devices() -> list[str]:
    return [f"d{i:02d}" for i in range(N_DEVICES)]


def power(serving: ServingModel, reps: int) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for shift in POWER_SHIFTS:
        new_first, old_first, other_alerts = [], [], 0
        for rep in range(reps):
            fleet = Fleet(serving, 1000 * rep + int(shift * 100))
            rows: list[Any] = []
            first = old = None
            for k in range(1, MAX_WINDOWS + 1):
                rows.append(fleet.window("dev", 500, {SHIFTED_FEATURE: shift}))
                if first is None:
                    result = report(serving, rows, "dev")
                    if flagged(result, "dev", SHIFTED_FEATURE):
                        first = k
                    drivers = _drivers(result)
                    other_alerts += any(set(d.features) - {SHIFTED_FEATURE} for d in drivers)
                if old is None and SHIFTED_FEATURE in old_rule(serving, rows):
                    old = k
                if first is not None and old is not None:
                    break
            new_first.append(first)
            old_first.append(old)
        table[str(shift)] = {
            "new_first_window": new_first,
            "old_first_window": old_first,
            "new_rate_by_windows": {k: sum(f is not None and f <= k for f in new_first) / reps for k in (1, 5, 10, 20)},
            "old_rate_by_windows": {k: sum(f is not None and f <= k for f in old_first) / reps for k in (1, 5, 10, 20)},
            "reports_with_another_feature_flagged": other_alerts,
        }
    return table


def few_devices(serving: ServingModel, reps: int) -> dict[str, Any]:
    features = (SHIFTED_FEATURE, 10, 20)
    alerts, named, fleet_sum_flagged, old_fleet = 0, 0, 0, 0
    for rep in range(reps):
        fleet = Fleet(serving, 5000 + rep)
        odd = {f"d{(11 * rep + 2) % N_DEVICES:02d}", f"d{(11 * rep + 29) % N_DEVICES:02d}"}
        rows = [
            fleet.window(d, 500, dict.fromkeys(features, 1.5) if d in odd else None)
            for _ in range(5)
            for d in _devices()
        ]
        result = report(serving, rows, None)
        alerts += result.alert
        named += {d.device_id for d in _drivers(result)[:2]} == odd
        fleet_sum_flagged += bool(result.attribution and set(result.attribution.fleet_features) & set(features))
        old_fleet += bool(set(old_rule(serving, rows)) & set(features))
    return {
        "alert_rate": alerts / reps,
        "named_both_first": named / reps,
        "fleet_sum_flagged_rate": fleet_sum_flagged / reps,
        "old_fleet_flagged_rate": old_fleet / reps,
    }


def confidence_power(serving: ServingModel, reps: int) -> dict[str, Any]:
    """Windows until a device's confidence drift is flagged, and how often an input feature was (its
    marginals do not move: any feature flagged is a false alert)."""
    table: dict[str, Any] = {}
    for rho in CONFIDENCE_RHOS:
        first_windows: list[int | None] = []
        feature_flags = 0
        for rep in range(reps):
            fleet = Fleet(serving, 20_000 + 1000 * rep + int(rho * 100))
            rows: list[Any] = []
            first = None
            for k in range(1, MAX_WINDOWS + 1):
                rows.append(fleet.window("dev", 500, rho=rho))
                result = report(serving, rows, "dev")
                feature_flags += any(f.drifted for f in result.features)
                if result.confidence is not None and result.confidence.drifted:
                    first = k
                    break
            first_windows.append(first)
        table[str(rho)] = {
            "first_window": first_windows,
            "rate_by_windows": {k: sum(f is not None and f <= k for f in first_windows) / reps for k in (1, 5, 10, 20)},
            "reports_with_a_feature_flagged": feature_flags,
        }
    return table


def mass_point(serving: ServingModel, reps: int) -> dict[str, Any]:
    found = 0
    for rep in range(reps):
        fleet = Fleet(serving, 9000 + rep)
        row = fleet.window("dev", 500, zero_share=0.85)  # every 94 %-zero feature, MASS_FEATURE included
        found += flagged(report(serving, [row], "dev"), "dev", MASS_FEATURE)
    bins = [len(f.counts) for f in serving.manifest.reference.features if f.index >= N_NORMAL]
    return {"detected_in_first_window": found / reps, "bins_of_mass_features": sorted(set(bins)), "old_bins": 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--reference-rows", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="fewer clean windows (a smoke run)")
    args = parser.parse_args(argv)
    serving = serving_model(args.reference_rows)
    started = time.perf_counter()
    results: dict[str, Any] = {"reference_rows": args.reference_rows, "devices": N_DEVICES, "features": N_FEATURES}
    for name, run in (
        ("clean", lambda: clean(serving, args.quick)),
        ("one_device_0_5sigma", lambda: one_device(serving, args.reps)),
        ("power", lambda: power(serving, args.reps)),
        ("few_devices_1_5sigma", lambda: few_devices(serving, max(args.reps // 2, 1))),
        ("confidence_drift", lambda: confidence_power(serving, args.reps)),
        ("mass_point", lambda: mass_point(serving, args.reps)),
    ):
        t = time.perf_counter()
        results[name] = run()
        print(f"{name}: {time.perf_counter() - t:.1f} s  {json.dumps(results[name])}", flush=True)
    sizes = Fleet(serving, 7)
    for _ in range(20):
        sizes.window("dev", 500)
    one = results["one_device_0_5sigma"]
    found = [k for k in one["windows_to_detect"] if k is not None]
    slow = results["power"]["0.2"]["new_first_window"]
    summary = {
        "false_alert_rate": results["clean"]["false_alert_rate"],
        "false_alert_rate_old": results["clean"]["false_alert_rate_old"],
        "windows_to_detect_0_5sigma": max(found) if len(found) == len(one["windows_to_detect"]) else None,
        "windows_to_detect_0_2sigma": max(slow) if None not in slow else None,
        "windows_to_detect_0_2sigma_median": median(k for k in slow if k is not None) if any(slow) else None,
        "shifted_device_rank": max(one["ranks"]) if one["ranks"] else None,
        "few_device_fleet_alert": results["few_devices_1_5sigma"]["named_both_first"] == 1.0,
        "window_bytes": max(sizes.bytes),
        "windows_to_detect_confidence": {
            rho: (max(v["first_window"]) if None not in v["first_window"] else None)
            for rho, v in results["confidence_drift"].items()
        },
        "seconds": round(time.perf_counter() - started, 1),
        **results,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
