"""The accuracy gate: an artifact must predict like the estimator it came from, on held-out data.

Classifiers: accuracy (against the true labels) may fall at most `max_accuracy_drop_pts` points below the
source estimator's, and at least `min_agreement` of the rows must get the source's label.
Regressors: RMSE (against the true values) may rise at most `max_error_increase_pct` percent above the
source's, and at least `min_agreement` of the rows must lie within `regression_rel_tolerance` x (std of
the source's predictions) of the source's prediction.
Pure functions over arrays; the compiler runs the artifact and the source estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Gate:
    max_accuracy_drop_pts: float = 0.5
    min_agreement: float = 0.99
    max_error_increase_pct: float = 1.0
    regression_rel_tolerance: float = 0.05


@dataclass(frozen=True)
class Verdict:
    passed: bool
    metrics: dict[str, float]
    reason: str  # why it failed, or "" when it passed


def source_metrics_classifier(source_labels: list[str], y_labels: list[str]) -> dict[str, float]:
    return {"accuracy": _share(source_labels, y_labels), "n_rows": float(len(y_labels))}


def source_metrics_regressor(source_values: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {**_regression(source_values, y), "n_rows": float(len(y))}


def _share(a: list[str], b: list[str]) -> float:
    return float(np.mean(np.asarray(a, dtype=object) == np.asarray(b, dtype=object))) if len(b) else 0.0


def _regression(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = np.asarray(pred, dtype=np.float64).reshape(len(y), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    err = pred - y
    ss_tot = float(((y - y.mean(axis=0)) ** 2).sum())
    return {
        "rmse": float(np.sqrt((err**2).mean())),
        "mae": float(np.abs(err).mean()),
        "r2": 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else 0.0,
    }


def judge_classifier(labels: list[str], source_labels: list[str], y_labels: list[str], gate: Gate) -> Verdict:
    accuracy = _share(labels, y_labels)
    source_accuracy = _share(source_labels, y_labels)
    agreement = _share(labels, source_labels)
    delta_pts = (accuracy - source_accuracy) * 100.0
    metrics = {"accuracy": accuracy, "accuracy_delta_pts": delta_pts, "agreement": agreement}
    problems = []
    if -delta_pts > gate.max_accuracy_drop_pts + 1e-9:
        problems.append(
            f"accuracy {accuracy:.4f} vs the source's {source_accuracy:.4f}: {delta_pts:+.2f} points "
            f"(allowed: no worse than {-gate.max_accuracy_drop_pts:+.2f})"
        )
    if agreement + 1e-12 < gate.min_agreement:
        problems.append(f"label agreement {agreement:.4f} < {gate.min_agreement:.4f}")
    return Verdict(not problems, metrics, "; ".join(problems))


def judge_regressor(values: np.ndarray, source_values: np.ndarray, y: np.ndarray, gate: Gate) -> Verdict:
    values = np.asarray(values, dtype=np.float64).reshape(len(y), -1)
    source = np.asarray(source_values, dtype=np.float64).reshape(len(y), -1)
    mine, theirs = _regression(values, y), _regression(source, y)
    increase = (mine["rmse"] / theirs["rmse"] - 1.0) * 100.0 if theirs["rmse"] > 0 else 0.0
    spread = float(source.std()) or 1.0
    deviation = np.abs(values - source).max(axis=1)
    agreement = float(np.mean(deviation <= gate.regression_rel_tolerance * spread))
    metrics = {
        **mine,
        "rmse_increase_pct": increase,
        "agreement": agreement,
        "max_abs_deviation": float(deviation.max()) if deviation.size else 0.0,
    }
    problems = []
    if increase > gate.max_error_increase_pct + 1e-9:
        problems.append(
            f"RMSE {mine['rmse']:.5g} vs the source's {theirs['rmse']:.5g}: {increase:+.2f}% "
            f"(allowed: at most {gate.max_error_increase_pct:+.2f}%)"
        )
    if agreement + 1e-12 < gate.min_agreement:
        within = f"within {gate.regression_rel_tolerance} std"
        problems.append(f"agreement {agreement:.4f} < {gate.min_agreement:.4f} ({within})")
    return Verdict(not problems, metrics, "; ".join(problems))
