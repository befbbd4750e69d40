"""The accuracy gate: its arithmetic, and a refused build that reports its figures."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from compiler_kit import Split, fit_quietly, sk_labels
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from edge_agent.serving.runtime import load_model
from model_compiler import Gate, GateRefusedError, compile_estimator
from model_compiler.gate import judge_classifier, judge_regressor


def test_classifier_gate_thresholds() -> None:
    y = ["a"] * 200
    source = ["a"] * 200
    one_off = ["a"] * 199 + ["b"]  # -0.5 points, 99.5% agreement: just inside the default gate
    verdict = judge_classifier(one_off, source, y, Gate())
    assert verdict.passed and verdict.reason == ""
    assert verdict.metrics["accuracy_delta_pts"] == pytest.approx(-0.5)
    assert verdict.metrics["agreement"] == pytest.approx(0.995)
    two_off = ["a"] * 198 + ["b", "b"]  # -1.0 point
    verdict = judge_classifier(two_off, source, y, Gate())
    assert not verdict.passed
    assert "accuracy 0.9900 vs the source's 1.0000: -1.00 points (allowed: no worse than -0.50)" in verdict.reason
    strict = Gate(min_agreement=1.0)
    assert "label agreement 0.9950 < 1.0000" in judge_classifier(one_off, source, y, strict).reason


def test_regressor_gate_thresholds() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=500)
    source = y + rng.normal(scale=0.3, size=500)
    assert judge_regressor(source + 1e-4, source, y, Gate()).passed
    verdict = judge_regressor(source + 0.5, source, y, Gate())
    assert not verdict.passed
    assert "vs the source's" in verdict.reason and "(allowed: at most +1.00%)" in verdict.reason
    assert "agreement" in verdict.reason
    assert verdict.metrics["rmse_increase_pct"] > 1.0


def test_refused_build_reports_every_candidate(digits: Split) -> None:
    estimator = fit_quietly(
        make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=50, random_state=0)),
        digits.x_train,
        digits.y_train,
    )
    impossible = Gate(max_accuracy_drop_pts=-50.0)  # would need 50 points better than the source
    with pytest.raises(GateRefusedError) as info:
        compile_estimator(estimator, digits.x_test, digits.y_test, target="onnx", quantize="auto", gate=impossible)
    message = str(info.value)
    assert "no onnx artifact of Pipeline(StandardScaler, MLPClassifier) passed the accuracy gate" in message
    assert "REFUSED" in message and "(allowed: no worse than +50.00)" in message
    report = info.value.report
    assert [(c.quantization, c.variant) for c in report.candidates] == [
        ("none", ""),
        ("int8", "per-tensor"),
        ("int8", "per-channel"),
        ("fp16", "fp16"),
    ]
    assert all(not c.passed and c.reason for c in report.candidates)
    assert all(c.metrics["accuracy"] > 0.8 for c in report.candidates)


def test_auto_picks_the_smallest_passing_artifact(digits: Split) -> None:
    estimator = fit_quietly(
        make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=50, random_state=0)),
        digits.x_train,
        digits.y_train,
    )
    result = compile_estimator(estimator, digits.x_test, digits.y_test, quantize="auto")
    passing = [c for c in result.report.candidates if c.passed]
    chosen = [c for c in result.report.candidates if c.chosen]
    assert len(chosen) == 1 and chosen[0].size_bytes == min(c.size_bytes for c in passing)
    assert result.artifacts[0].artifact.quantization == "int8"
    assert result.artifacts[0].artifact.size_bytes == chosen[0].size_bytes
    why = result.fragment.lineage["compiler_choice.onnx"]
    assert why.startswith(f"auto kept int8 {chosen[0].variant} ({chosen[0].size_bytes:,} B): the smallest of")
    assert "fp16" in why and f"onnx: {why}" in result.report.table()


def test_auto_takes_fp16_weights_where_int8_is_larger(cancer: Split) -> None:
    """Quantizing a 30-weight model adds more scale tensors than it saves; float16 weights still halve it."""
    estimator = make_pipeline(StandardScaler(), LogisticRegression()).fit(cancer.x_train, cancer.y_train)
    result = compile_estimator(estimator, cancer.x_test, cancer.y_test, quantize="auto")
    sizes = {c.quantization: c.size_bytes for c in result.report.candidates if c.variant != "per-channel"}
    assert sizes["int8"] > sizes["none"] > sizes["fp16"]
    assert result.artifacts[0].artifact.quantization == "fp16"
    assert result.artifacts[0].artifact.name == "model.fp16.onnx"


def _mlp(digits: Split) -> Any:
    return fit_quietly(
        make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=50, random_state=0)),
        digits.x_train,
        digits.y_train,
    )


def test_auto_falls_back_to_fp16_where_int8_loses_labels(digits: Split) -> None:
    estimator = _mlp(digits)
    target = "onnx"
    strict = Gate(min_agreement=1.0)  # every label kept: ONNX INT8 flips one or more of the 540 (deterministic)
    result = compile_estimator(estimator, digits.x_test, digits.y_test, target=target, quantize="auto", gate=strict)
    refused = [c for c in result.report.candidates if not c.passed]
    assert refused and all(c.quantization == "int8" for c in refused)
    kept = result.artifacts[0].artifact
    assert kept.quantization == "fp16" and kept.metrics["agreement"] == 1.0
    fp32 = next(c for c in result.report.candidates if c.quantization == "none")
    assert kept.size_bytes < 0.6 * fp32.size_bytes
    why = result.fragment.lineage[f"compiler_choice.{target}"]
    assert why.startswith("auto kept fp16") and "refused by the gate: int8 per-tensor" in why
    assert "label agreement" in why
    model = load_model(kept, result.artifacts[0].data, result.fragment.io)
    assert model.predict(digits.x_test).labels == sk_labels(estimator, digits.x_test.astype(np.float32))


def test_regressor_report_and_metrics(diabetes: Split) -> None:
    result = compile_estimator(Ridge().fit(diabetes.x_train, diabetes.y_train), diabetes.x_test, diabetes.y_test)
    metrics = result.artifacts[0].artifact.metrics
    assert metrics["rmse_increase_pct"] < 1.0 and metrics["agreement"] >= 0.99
    assert set(result.fragment.metrics) >= {"rmse", "mae", "r2", "n_rows"}
    assert "rmse" in result.report.table()


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_fp16_weights_halve_the_artifact_and_keep_every_label(target: str, digits: Split) -> None:
    estimator = _mlp(digits)
    fp32 = compile_estimator(estimator, digits.x_test, digits.y_test, target=target, quantize="none")
    fp16 = compile_estimator(estimator, digits.x_test, digits.y_test, target=target, quantize="fp16")
    big, small = fp32.artifacts[0].artifact, fp16.artifacts[0].artifact
    assert (small.quantization, small.name) == ("fp16", f"model.fp16.{target}")
    assert small.size_bytes < 0.6 * big.size_bytes
    model = load_model(small, fp16.artifacts[0].data, fp16.fragment.io)
    prediction = model.predict(digits.x_test)
    assert prediction.labels == sk_labels(estimator, digits.x_test.astype(np.float32))
    np.testing.assert_allclose(prediction.scores, estimator.predict_proba(digits.x_test), atol=2e-3)
