"""What a staged rollout does next, from where it stands and its open wave's verdict. Pure: no I/O.

    no wave open yet                      -> open the first wave (or complete: nothing to roll out)
    verdict BREACH                        -> roll back, or pause (the rollout's on_breach)
    verdict WAIT for longer than max_wait -> pause ("stalled": the wave never gathered enough evidence)
    verdict PASS for the first time       -> start dwelling (or advance at once when dwell is 0)
    verdict PASS and dwelt long enough    -> open the next wave, or complete after the last
    otherwise                             -> wait

A dwelling wave is still judged on every step, so a breach while dwelling stops the rollout too. Only a
running rollout moves; paused and finished ones wait for an operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cloud.db.statuses import RolloutState
from cloud.rollout.gates import Decision


class Action(StrEnum):
    OPEN_WAVE = "open_wave"
    PASSED = "passed"  # the open wave passed its gates for the first time: dwelling starts
    COMPLETE = "complete"
    PAUSE = "pause"  # a breach under on_breach=pause
    ROLLBACK = "rollback"  # a breach under on_breach=rollback
    STALLED = "stalled"  # paused: no verdict within max_wait
    WAIT = "wait"


class OnBreach(StrEnum):
    ROLLBACK = "rollback"
    PAUSE = "pause"


@dataclass(frozen=True)
class Position:
    state: RolloutState
    current_wave: int  # -1 before the first wave opens
    wave_count: int
    wave_opened_ms: int | None
    wave_passed_ms: int | None
    dwell_ms: int
    max_wait_ms: int
    on_breach: OnBreach


def next_action(at: Position, verdict: Decision | None, now_ms: int) -> Action:
    if at.state is not RolloutState.RUNNING:
        return Action.WAIT
    if at.current_wave < 0:
        return Action.OPEN_WAVE if at.wave_count > 0 else Action.COMPLETE
    if verdict is Decision.BREACH:
        return Action.ROLLBACK if at.on_breach is OnBreach.ROLLBACK else Action.PAUSE
    if verdict is Decision.PASS:
        if at.wave_passed_ms is None and at.dwell_ms > 0:
            return Action.PASSED
        passed_ms = now_ms if at.wave_passed_ms is None else at.wave_passed_ms
        if now_ms - passed_ms < at.dwell_ms:
            return Action.WAIT
        return Action.OPEN_WAVE if at.current_wave + 1 < at.wave_count else Action.COMPLETE
    opened_ms = now_ms if at.wave_opened_ms is None else at.wave_opened_ms
    return Action.STALLED if now_ms - opened_ms >= at.max_wait_ms else Action.WAIT
