"""The champion/challenger margin rule: paired comparisons and the verdict they give."""

from __future__ import annotations

import pytest

from cloud.training.champion import MarginPolicy, Outcome, compare, judge


def _cmp(name: str, n: int, champion_right: int, challenger_right: int, both_right: int):
    """n rows; the first `both_right` both models get right, then the champion's own, then the challenger's."""
    truth = ["y"] * n
    champion = ["y"] * champion_right + ["n"] * (n - champion_right)
    rest = n - champion_right - challenger_right + both_right
    challenger = (["y"] * both_right + ["n"] * (champion_right - both_right)
                  + ["y"] * (challenger_right - both_right) + ["n"] * rest)
    return compare(name, truth, champion, challenger)


def test_compare_counts_the_discordant_pairs() -> None:
    c = compare("f", ["a", "b", "c", "d"], ["a", "x", "c", "x"], ["a", "b", "x", "x"])
    assert (c.n, c.champion_correct, c.challenger_correct, c.challenger_only, c.champion_only) == (4, 2, 2, 1, 1)
    assert c.gain == 0.0
    low, high = c.gain_interval()  # type: ignore[misc]
    assert low < 0 < high


def test_a_clear_field_gain_without_reference_loss_wins() -> None:
    field = _cmp("field", 100, champion_right=55, challenger_right=92, both_right=54)
    reference = _cmp("reference", 500, champion_right=490, challenger_right=488, both_right=485)
    verdict = judge(field, reference, MarginPolicy(margin=0.02, max_reference_loss=0.03))
    assert verdict.outcome == Outcome.WIN, verdict.reasons
    assert field.gain == pytest.approx(0.37)


def test_a_gain_inside_the_margin_loses() -> None:
    # +3 points on 100 rows: the lower bound of the paired interval is below a 2-point margin
    field = _cmp("field", 100, champion_right=80, challenger_right=83, both_right=78)
    reference = _cmp("reference", 500, champion_right=490, challenger_right=490, both_right=490)
    verdict = judge(field, reference, MarginPolicy(margin=0.02))
    assert verdict.outcome == Outcome.LOSE
    assert "not above margin" in verdict.reasons[0]


def test_forgetting_the_reference_task_loses_even_with_a_field_gain() -> None:
    field = _cmp("field", 100, champion_right=50, challenger_right=95, both_right=50)
    reference = _cmp("reference", 500, champion_right=490, challenger_right=430, both_right=430)
    verdict = judge(field, reference, MarginPolicy(max_reference_loss=0.03))
    assert verdict.outcome == Outcome.LOSE
    assert "loses more than" in verdict.reasons[1]


def test_too_few_labelled_rows_is_inconclusive_not_a_loss() -> None:
    field = _cmp("field", 10, champion_right=2, challenger_right=10, both_right=2)
    reference = _cmp("reference", 500, champion_right=490, challenger_right=490, both_right=490)
    verdict = judge(field, reference, MarginPolicy(min_field_rows=30))
    assert verdict.outcome == Outcome.INCONCLUSIVE
    assert "10 labelled field rows" in verdict.reasons[0]


def test_bad_policies_and_mismatched_rows_are_refused() -> None:
    with pytest.raises(ValueError):
        MarginPolicy(margin=1.5)
    with pytest.raises(ValueError):
        MarginPolicy(min_field_rows=0)
    with pytest.raises(ValueError, match="2 labels"):
        compare("f", ["a", "b"], ["a"], ["a", "b"])
