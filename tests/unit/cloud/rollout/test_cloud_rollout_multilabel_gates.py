"""The prediction-shift gate on a real multilabel model: scikit-learn MLPs compiled to ONNX, answering in
onnxruntime on the agent's telemetry windows (each label's rows on, `label_counts`), stored as the cloud's
ingestion stores them, summed by the rollout's figures and judged.

The candidate that breaches turns label 0 on far more often, but only in rows that already have two other
labels on: the "predicted class" histogram the gate compared before (it counts a row only when exactly one
label is on) sees no change at all, and passed it. Each label's positive rate, one test per label in one
family, sees it; an equal candidate (retrained with another seed) passes both ways."""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cloud.db.tables import TelemetryRecord
from cloud.monitoring.ingest import telemetry_row
from cloud.rollout.figures import arm_figures
from cloud.rollout.gates import ArmFigures, Decision, GatePolicy, InstallTally, judge
from edge_agent.serving.runtime import load_model
from edge_agent.serving.slot import ServingModel
from edge_agent.serving.telemetry import Telemetry
from model_compiler import compile_estimator
from protocols.v1 import messages_pb2 as pb

LABELS = 4
DEVICES = [f"pi-{i}" for i in range(4)]


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Label j is on when features 2j and 2j+1 add up above a threshold (plus noise): label 0 in ~1 row of
    4, the others in half; independent of each other."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2 * LABELS))
    thresholds = np.array([1.0] + [0.0] * (LABELS - 1))
    y = (x[:, 0::2] + x[:, 1::2] + rng.normal(scale=0.2, size=(rows, LABELS)) > thresholds).astype(int)
    return x.astype(np.float32), y


def _serving(y_of: Any, seed: int, version: str) -> ServingModel:
    x, y = _data(4500, seed=0)
    y = y_of(y)
    model = make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=300, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x[:3000], y[:3000])
    result = compile_estimator(model, x[3000:4500], y[3000:4500], target="onnx", quantize="none")
    manifest = pb.Manifest(model_id="tags", version=version, sequence=int(version), created_at_ms=1)
    manifest.MergeFrom(result.fragment)
    assert manifest.io.task == pb.TASK_MULTILABEL and len(manifest.reference.label_rates.labels) == LABELS
    artifact = result.artifacts[0]
    loaded = load_model(artifact.artifact, artifact.data, manifest.io)
    ref = pb.ModelRef(model_id="tags", version=version, sequence=int(version))
    return ServingModel(loaded, None, manifest, ref)  # type: ignore[arg-type]  (no installed copy needed)


def _label_0_beside_two_others(y: np.ndarray) -> np.ndarray:
    shifted = y.copy()
    shifted[:, 0] |= (y[:, 1:].sum(axis=1) >= 2).astype(shifted.dtype)
    return shifted


@pytest.fixture(scope="module")
def models() -> dict[str, ServingModel]:
    return {
        "previous": _serving(lambda y: y, seed=0, version="1"),
        "equal": _serving(lambda y: y, seed=1, version="2"),
        "shifted": _serving(_label_0_beside_two_others, seed=0, version="3"),
    }


def _arm(serving: ServingModel, rows_per_device: int, seed: int) -> ArmFigures:
    """Each device answers its own live rows through the model and sends one window, stored as ingestion does."""
    records = []
    for d, device in enumerate(DEVICES):
        live, _ = _data(rows_per_device, seed=seed + d)
        telemetry = Telemetry(device, 0, serving)
        for batch in np.array_split(live, 10):
            telemetry.record(serving, batch, serving.model.predict(batch), latency_us=100.0)
        window = telemetry.close_window(1000, 1, serving)
        assert window is not None and window.label_counts[0] == rows_per_device
        records.append(TelemetryRecord(**telemetry_row(device, window, int(time.time() * 1000))))
    return arm_figures(records)


def _shift(policy: GatePolicy, new: ArmFigures, baseline: ArmFigures) -> Any:
    verdict = judge(policy, InstallTally(len(DEVICES), 0), new, baseline)
    return next(g for g in verdict.gates if g.gate == "prediction_shift")


def test_a_candidate_turning_label_0_on_far_more_often_breaches_and_an_equal_one_passes(
    models: dict[str, ServingModel],
) -> None:
    policy = GatePolicy(min_devices=2, min_inferences=1000)
    baseline = _arm(models["previous"], 500, seed=100)
    equal, shifted = _arm(models["equal"], 500, seed=200), _arm(models["shifted"], 500, seed=200)
    rows, *on = shifted.label_counts
    assert rows == 2000 and on[0] > 2 * baseline.label_counts[1]  # label 0 on far more often
    breach = _shift(policy, shifted, baseline)
    assert breach.decision is Decision.BREACH, breach
    assert breach.detail.startswith("label 0 on in") and "1 of 4 label(s) shifted" in breach.detail
    passed = _shift(policy, equal, baseline)
    assert passed.decision is Decision.PASS, passed
    # what the gate compared before: the "predicted class" histogram sees nothing (rows with one label on
    # keep it), so it passed the shifted candidate
    assert _shift(policy, replace(shifted, label_counts=()), replace(baseline, label_counts=())).decision is (
        Decision.PASS
    )


def test_the_early_per_label_test_breaches_on_a_few_windows_and_waits_on_an_equal_model(
    models: dict[str, ServingModel],
) -> None:
    """Below the minimum evidence, each label's sequential test (at alpha / labels) may breach early."""
    policy = GatePolicy(min_devices=10, min_inferences=100_000)
    baseline = _arm(models["previous"], 500, seed=100)
    early = _shift(policy, _arm(models["shifted"], 60, seed=300), baseline)
    assert early.decision is Decision.BREACH and "early" in early.detail and early.detail.startswith("label 0"), early
    assert _shift(policy, _arm(models["equal"], 60, seed=300), baseline).decision is Decision.WAIT
