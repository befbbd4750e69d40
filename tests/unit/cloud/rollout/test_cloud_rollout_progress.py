"""The staged rollout's next step, one row per situation."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cloud.db.statuses import RolloutState
from cloud.rollout.gates import Decision
from cloud.rollout.progress import Action, OnBreach, Position, next_action

RUNNING = Position(RolloutState.RUNNING, current_wave=0, wave_count=3, wave_opened_ms=1_000, wave_passed_ms=None,
                   dwell_ms=60_000, max_wait_ms=600_000, on_breach=OnBreach.ROLLBACK)  # fmt: skip


@pytest.mark.parametrize(
    ("position", "verdict", "now", "action"),
    [
        (replace(RUNNING, current_wave=-1, wave_opened_ms=None), None, 0, Action.OPEN_WAVE),
        (replace(RUNNING, current_wave=-1, wave_count=0), None, 0, Action.COMPLETE),
        (RUNNING, Decision.WAIT, 2_000, Action.WAIT),
        (RUNNING, Decision.WAIT, 601_000, Action.STALLED),
        (RUNNING, Decision.BREACH, 2_000, Action.ROLLBACK),
        (replace(RUNNING, on_breach=OnBreach.PAUSE), Decision.BREACH, 2_000, Action.PAUSE),
        (RUNNING, Decision.PASS, 2_000, Action.PASSED),
        (replace(RUNNING, wave_passed_ms=2_000), Decision.PASS, 61_999, Action.WAIT),  # still dwelling
        (replace(RUNNING, wave_passed_ms=2_000), Decision.PASS, 62_000, Action.OPEN_WAVE),
        (replace(RUNNING, wave_passed_ms=2_000), Decision.BREACH, 30_000, Action.ROLLBACK),  # while dwelling
        (replace(RUNNING, current_wave=2, wave_passed_ms=2_000), Decision.PASS, 62_000, Action.COMPLETE),
        (replace(RUNNING, dwell_ms=0), Decision.PASS, 2_000, Action.OPEN_WAVE),  # no dwell: advance at once
        (replace(RUNNING, state=RolloutState.PAUSED), Decision.PASS, 99_999_999, Action.WAIT),
        (replace(RUNNING, state=RolloutState.ROLLED_BACK), Decision.BREACH, 2_000, Action.WAIT),
    ],
)
def test_next_action(position: Position, verdict: Decision | None, now: int, action: Action) -> None:
    assert next_action(position, verdict, now) is action
