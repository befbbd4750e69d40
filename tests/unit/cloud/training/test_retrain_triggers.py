"""What starts a retrain: drift, a confident accuracy drop, a schedule, an operator."""

from __future__ import annotations

import pytest

from cloud.training.triggers import TriggerKind, TriggerPolicy, by_operator, first, on_accuracy, on_drift, on_schedule


def test_drift_triggers_only_when_something_drifted_and_the_policy_wants_it() -> None:
    assert on_drift([], [], TriggerPolicy()) is None
    fired = on_drift(["f3"], ["d1"], TriggerPolicy())
    assert fired is not None and fired.kind == TriggerKind.DRIFT and "f3" in fired.reason
    assert on_drift(["f3"], ["d1"], TriggerPolicy(on_drift=False)) is None


def test_an_accuracy_drop_must_be_confident_and_on_enough_labels() -> None:
    policy = TriggerPolicy(max_accuracy_drop=0.05, min_labelled=30)
    assert on_accuracy(100, 0.60, 0.70, 0.97, policy) is not None  # interval's top 0.70 < 0.92
    assert on_accuracy(100, 0.90, 0.95, 0.97, policy) is None  # could still be 0.95: no alarm
    assert on_accuracy(10, 0.10, 0.40, 0.97, policy) is None  # too few labels
    assert on_accuracy(100, None, None, 0.97, policy) is None


def test_schedule_fires_when_due_and_never_without_one() -> None:
    assert on_schedule(None, 1_000, TriggerPolicy()) is None
    every_hour = TriggerPolicy(every_s=3600)
    assert on_schedule(None, 1_000, every_hour) is not None
    assert on_schedule(0, 3_599_000, every_hour) is None
    assert on_schedule(0, 3_600_000, every_hour) is not None


def test_operator_trigger_names_the_operator_and_first_keeps_the_order() -> None:
    with pytest.raises(ValueError):
        by_operator(" ", "why")
    manual = by_operator("ana", "new labels")
    assert manual.kind == TriggerKind.OPERATOR and manual.reason.startswith("ana")
    assert first(None, manual, on_schedule(None, 0, TriggerPolicy(every_s=1))) is manual
    assert first(None, None) is None
