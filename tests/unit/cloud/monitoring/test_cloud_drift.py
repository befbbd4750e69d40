from __future__ import annotations

import math

import pytest

from cloud.monitoring import drift


def test_psi_of_a_known_shift() -> None:
    # (0.25 - 0.5) ln(0.5) + (0.75 - 0.5) ln(1.5)
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert drift.psi([50, 50], [25, 75]) == pytest.approx(expected)
    assert drift.psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)


def test_psi_floors_empty_bins_with_epsilon() -> None:
    value = drift.psi([50, 50], [100, 0], eps=1e-4)
    expected = (1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert value == pytest.approx(expected)
    assert math.isfinite(value)


def test_js_distance_bounds() -> None:
    assert drift.js_distance([1, 1], [5, 5]) == pytest.approx(0.0)
    assert drift.js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert drift.js_distance([50, 50], [25, 75]) == pytest.approx(drift.js_distance([25, 75], [50, 50]))


def test_chi_square_statistic_and_p_value() -> None:
    statistic, p_value = drift.chi_square([1, 1], [30, 70])
    assert statistic == pytest.approx(16.0)
    assert p_value == pytest.approx(6.334e-5, rel=1e-3)  # chi2(df=1).sf(16)
    _, same = drift.chi_square([1, 1], [50, 50])
    assert same == pytest.approx(1.0)


def test_benjamini_hochberg_matches_the_textbook_procedure() -> None:
    p_values = [0.01, 0.04, 0.03, 0.20]
    # sorted 0.01, 0.03, 0.04, 0.20 vs 0.0125, 0.025, 0.0375, 0.05: largest k with p_(k) <= k/m*alpha is 1
    assert drift.benjamini_hochberg(p_values, alpha=0.05) == [True, False, False, False]
    assert drift.benjamini_hochberg([0.001, 0.002, 0.003], alpha=0.05) == [True, True, True]
    assert drift.benjamini_hochberg([]) == []


def test_merge_counts_sums_and_refuses_mismatched_bins() -> None:
    merged = drift.merge_counts([{0: [1, 2], 1: [3, 0]}, {0: [4, 5]}, {"1": [1, 1]}])  # type: ignore[list-item]
    assert merged == {0: [5, 7], 1: [4, 1]}
    with pytest.raises(ValueError, match="bins"):
        drift.merge_counts([{0: [1, 2]}, {0: [1, 2, 3]}])


def test_bad_inputs_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="mismatch"):
        drift.psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="zero"):
        drift.psi([1, 1], [0, 0])
    with pytest.raises(ValueError, match="non-negative"):
        drift.psi([1, 1], [-1, 3])


def test_feature_drift_levels_and_multiple_testing() -> None:
    reference = [drift.ReferenceFeature(i, f"f{i}", [250, 250, 250, 250]) for i in range(3)]
    observed = {0: [250, 250, 250, 250], 1: [100, 150, 300, 450], 2: [260, 240, 255, 245]}
    by_index = {
        f.index: f for f in drift.feature_drift(reference + [drift.ReferenceFeature(3, "f3", [1, 1])], observed)
    }
    assert by_index[0].level == "stable" and not by_index[0].drifted
    assert by_index[1].level == "significant" and by_index[1].drifted
    assert by_index[2].level == "stable" and not by_index[2].drifted
    assert by_index[3].level == "no_data" and by_index[3].psi is None and by_index[3].n_observed == 0
    assert by_index[1].p_value is not None and by_index[1].p_value < 1e-6


def test_prediction_drift_aligns_labels() -> None:
    ref, obs = drift.align_labelled(["a", "b"], [50, 50], ["b", "c", "a"], [10, 5, 85])
    assert ref == [50.0, 50.0, 0.0]
    assert obs == [85.0, 10.0, 5.0]
    result = drift.prediction_drift(ref, obs)
    assert result.n_observed == 100 and result.level == "significant"
    assert drift.prediction_drift([1, 1], [0, 0]).level == "no_data"
