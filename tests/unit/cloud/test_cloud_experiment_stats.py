"""A/B statistics against values computed by hand and textbook cases."""

from __future__ import annotations

import pytest

from cloud.experiments.stats import Proportion, compare, two_proportion_p_value, wilson_interval


def test_wilson_interval_matches_the_textbook_value() -> None:
    low, high = wilson_interval(Proportion(81, 263))  # type: ignore[misc]
    assert low == pytest.approx(0.2553, abs=1e-4) and high == pytest.approx(0.3662, abs=1e-4)
    assert wilson_interval(Proportion(0, 10))[0] == pytest.approx(0.0, abs=1e-12)  # type: ignore[index]
    assert wilson_interval(Proportion(10, 10))[1] == pytest.approx(1.0)  # type: ignore[index]
    assert wilson_interval(Proportion(0, 0)) is None


def test_two_proportion_test_separates_real_differences_from_noise() -> None:
    assert two_proportion_p_value(Proportion(900, 1000), Proportion(800, 1000)) < 1e-8  # type: ignore[operator]
    assert two_proportion_p_value(Proportion(50, 100), Proportion(52, 100)) > 0.5  # type: ignore[operator]
    assert two_proportion_p_value(Proportion(10, 10), Proportion(20, 20)) == 1.0
    assert two_proportion_p_value(Proportion(1, 1), Proportion(0, 0)) is None


def test_a_winner_needs_significance_enough_trials_and_the_right_direction() -> None:
    better_b = compare(Proportion(800, 1000), Proportion(900, 1000), higher_is_better=True)
    assert better_b.winner == "b"
    errors = compare(Proportion(800, 1000), Proportion(900, 1000), higher_is_better=False)  # fewer errors wins
    assert errors.winner == "a"
    assert compare(Proportion(50, 100), Proportion(52, 100), higher_is_better=True).winner is None
    assert compare(Proportion(9, 10), Proportion(1, 10), higher_is_better=True, min_trials=100).winner is None
