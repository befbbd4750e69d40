from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from cloud.monitoring import stats


def test_two_sample_chi_square_matches_the_contingency_table_test() -> None:
    a, b = [30, 50, 20], [10, 30, 40]
    expected = sps.chi2_contingency([a, b], correction=False)
    result = stats.chi_square_two_sample(a, b, min_expected=0)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.dof == 2


def test_g_test_matches_the_log_likelihood_ratio() -> None:
    a, b = [30, 50, 20], [10, 30, 40]
    expected = sps.chi2_contingency([a, b], correction=False, lambda_="log-likelihood")
    result = stats.g_test(a, b, min_expected=0)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)


def test_sparse_bins_merge_until_each_expects_enough_rows() -> None:
    x, y = stats.merge_sparse_bins([1000, 0, 5, 995], [50, 0, 1, 49], min_expected=5)
    assert x.sum() == 2000 and y.sum() == 100
    assert len(x) == 2  # the empty and the 6-row bin joined a neighbour
    assert stats.chi_square_two_sample([100, 0], [0, 0]).dof == 0  # nothing observed: nothing to test


def test_two_sample_chi_square_holds_its_level_where_reference_as_exact_does_not() -> None:
    # 2,000 no-drift windows of 300 rows against a 1,000-row reference from the same distribution
    rng = np.random.default_rng(7)
    truth = np.full(10, 0.1)
    two_sample = one_sample = 0
    for _ in range(2000):
        ref, obs = rng.multinomial(1000, truth), rng.multinomial(300, truth)
        two_sample += stats.chi_square_two_sample(ref, obs).p_value <= 0.05
        expected = ref / ref.sum() * 300  # the old rule: reference proportions taken as exact
        one_sample += sps.chi2.sf(float(np.sum((obs - expected) ** 2 / expected)), 9) <= 0.05
    assert 0.03 <= two_sample / 2000 <= 0.065
    assert one_sample / 2000 > 0.065


def test_binned_ks_is_a_conservative_lower_bound_of_the_continuous_test() -> None:
    rng = np.random.default_rng(3)
    ref, live = rng.normal(size=2000), rng.normal(0.3, size=800)
    edges = np.quantile(ref, np.linspace(0, 1, 11))
    bins = lambda v: np.bincount(np.clip(np.searchsorted(edges[1:-1], v, side="right"), 0, 9), minlength=10)  # noqa: E731
    result = stats.binned_ks(bins(ref), bins(live))
    exact = sps.ks_2samp(ref, live)
    assert result.statistic <= exact.statistic <= result.upper
    assert result.p_value >= exact.pvalue * 0.5  # conservative (up to the asymptotic formula)
    assert result.p_value < 1e-6


def test_psi_is_smoothed_and_the_null_expectation_scales_with_sample_sizes() -> None:
    assert stats.psi([10, 20, 30], [1, 2, 3], smoothing=0) == pytest.approx(0.0)
    assert math.isfinite(stats.psi([50, 50], [100, 0]))
    assert stats.psi([50, 50], [100, 0]) < 0.69 + 4  # no epsilon floor blowing it up
    assert stats.psi_expected_null(10, 50, 10_000) == pytest.approx(9 * (1 / 50 + 1 / 10_000))
    rng = np.random.default_rng(1)
    truth = np.full(10, 0.1)
    mean = np.mean([stats.psi(rng.multinomial(5000, truth), rng.multinomial(100, truth)) for _ in range(400)])
    assert mean == pytest.approx(stats.psi_expected_null(10, 5000, 100), rel=0.2)


def test_js_distance_bounds() -> None:
    assert stats.js_distance([1, 1], [5, 5]) == pytest.approx(0.0)
    assert stats.js_distance([1, 0], [0, 1]) == pytest.approx(1.0)


def test_fdr_adjustments_match_the_textbook_procedures() -> None:
    p = [0.01, 0.04, 0.03, 0.20]
    assert stats.fdr_reject(p, 0.05, "bh") == [True, False, False, False]
    assert stats.fdr_adjust(p, "bh") == pytest.approx(sps.false_discovery_control(p, method="bh"))
    assert stats.fdr_adjust(p, "by") == pytest.approx(sps.false_discovery_control(p, method="by"))
    assert stats.fdr_reject([0.001, 0.002, 0.003], 0.05) == [True, True, True]
    assert stats.fdr_adjust([]).size == 0


def test_bad_inputs_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="mismatch"):
        stats.chi_square_two_sample([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        stats.binned_ks([1, 1], [-1, 3])
    with pytest.raises(ValueError, match="zero"):
        stats.psi([1, 1], [0, 0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.fdr_adjust([0.5, 1.5])
