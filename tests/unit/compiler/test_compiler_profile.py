"""The reference profile: quantile bins per feature and the prediction histogram."""

from __future__ import annotations

import numpy as np
import pytest
from compiler_kit import Split
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from model_compiler import compile_estimator
from model_compiler.profile import bin_index, feature_edges, reference_profile


def test_quantile_bins_have_unique_edges_and_count_every_finite_value() -> None:
    rng = np.random.default_rng(0)
    column = rng.normal(size=1000)
    edges = feature_edges(column)
    assert len(edges) == 11 and np.all(np.diff(edges) > 0)
    counts = np.bincount(bin_index(edges, column), minlength=10)
    assert counts.sum() == 1000 and counts.min() >= 90  # quantile bins: about 100 each
    coarse = feature_edges(np.repeat([0.0, 1.0, 2.0], 50))
    assert np.all(np.diff(coarse) > 0) and len(coarse) <= 4


def test_out_of_range_values_go_to_the_end_bins() -> None:
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    assert bin_index(edges, np.array([-5.0, 0.0, 0.99, 1.0, 2.5, 3.0, 99.0])).tolist() == [0, 0, 0, 1, 2, 2, 2]


def test_a_mostly_one_value_feature_gets_a_bin_for_the_value_and_bins_around_it() -> None:
    rng = np.random.default_rng(0)
    column = np.concatenate([np.zeros(940), rng.integers(1, 17, 60)]).astype(np.float64)  # 94 % zeros
    edges = feature_edges(column)
    counts = np.bincount(bin_index(edges, column), minlength=len(edges) - 1)
    assert np.all(np.diff(edges) > 0)
    assert counts[0] == 0 and counts[1] == 940  # below (empty), the mass point, then
    assert len(counts) == 5 and counts[2:].sum() == 60  # quantile bins above it
    # devices feed float32: the value and its float32 rounding share its bin
    constant = feature_edges(np.full(20, 0.1))
    live = np.array([0.1, np.float32(0.1), 0.05, 0.2])
    assert bin_index(constant, live).tolist() == [1, 1, 0, 2]


def test_profile_skips_missing_values_and_histograms_predictions() -> None:
    x = np.array([[1.0, 5.0], [2.0, np.nan], [3.0, 5.0], [4.0, 5.0]])
    profile = reference_profile(x, ["a", "b", "a", "a"], class_labels=["a", "b", "c"], feature_names=["f", "g"])
    assert profile.n_rows == 4
    assert [f.name for f in profile.features] == ["f", "g"]
    assert sum(profile.features[0].counts) == 4
    assert list(profile.features[1].counts) == [0, 3, 0]  # constant: its value and empty sides; NaN not counted
    assert list(profile.predictions.labels) == ["a", "b", "c"]
    assert list(profile.predictions.counts) == [3, 1, 0]
    regression = reference_profile(x, np.linspace(0, 1, 4), class_labels=[], feature_names=[])
    assert len(regression.predictions.bin_edges) == 11 and sum(regression.predictions.counts) == 4


def test_compiled_fragment_profiles_the_reference_data(digits: Split, diabetes: Split) -> None:
    estimator = make_pipeline(StandardScaler(), LogisticRegression()).fit(digits.x_train, digits.y_train)
    result = compile_estimator(estimator, digits.x_test, digits.y_test, reference_X=digits.x_train)
    reference = result.fragment.reference
    assert reference.n_rows == len(digits.x_train)
    assert len(reference.features) == 64
    assert all(sum(f.counts) == len(digits.x_train) for f in reference.features)
    assert all(len(f.bin_edges) == len(f.counts) + 1 for f in reference.features)
    assert sum(reference.predictions.counts) == len(digits.x_train)
    without = compile_estimator(estimator, digits.x_test, digits.y_test)  # falls back to the held-out data
    assert without.fragment.reference.n_rows == len(digits.x_test)
    ridge = compile_estimator(Ridge().fit(diabetes.x_train, diabetes.y_train), diabetes.x_test, diabetes.y_test)
    assert len(ridge.fragment.reference.predictions.bin_edges) == 11


def test_the_confidence_reference_is_the_held_out_rows_not_the_rows_the_model_was_fitted_to(digits: Split) -> None:
    """A model is more confident on its own training rows: a confidence profile of those would make any field
    from the same distribution look less confident than its reference (confidence drift with no drift)."""
    estimator = make_pipeline(StandardScaler(), LogisticRegression()).fit(digits.x_train, digits.y_train)
    result = compile_estimator(estimator, digits.x_test, digits.y_test, reference_X=digits.x_train)
    confidence = result.fragment.reference.confidence
    assert sum(confidence.counts) == len(digits.x_test)
    held_out = estimator.predict_proba(digits.x_test).max(axis=1)
    top = list(confidence.bin_edges)[-2]  # the highest bin: the most confident rows
    assert confidence.counts[-1] == pytest.approx((held_out >= top).sum(), abs=3)  # as compiled, not as fitted
    trained = estimator.predict_proba(digits.x_train).max(axis=1)
    assert (trained >= top).mean() > confidence.counts[-1] / len(digits.x_test)  # the bias it avoids


def test_the_agent_counts_float32_inputs_into_the_same_mass_point_bins() -> None:
    from edge_agent.serving.telemetry import FeatureBins

    rng = np.random.default_rng(2)
    x = np.column_stack([np.where(rng.random(2000) < 0.95, 0.1, rng.normal(size=2000)), rng.normal(size=2000)])
    profile = reference_profile(x, ["a"] * len(x), class_labels=["a"], feature_names=["mostly", "normal"])
    live = x.astype(np.float32)  # what devices feed: 0.1 becomes 0.100000001
    counts = FeatureBins.of(profile.features).count(live)  # type: ignore[union-attr]
    first = len(profile.features[0].counts)
    assert counts[:first].tolist() == list(profile.features[0].counts)
    assert counts[first:].sum() == len(x)
