"""The rollout status rules (cloud.rollout.status), pure: no database."""

from __future__ import annotations

import pytest

from cloud.db import DeploymentStatus, TargetStatus
from cloud.rollout.status import TERMINAL, roll_up, target_status_for

P, R, S, F, X = (
    TargetStatus.PENDING,
    TargetStatus.IN_PROGRESS,
    TargetStatus.SUCCEEDED,
    TargetStatus.FAILED,
    TargetStatus.SUPERSEDED,
)


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ([], DeploymentStatus.IN_PROGRESS),  # a label deployment waiting for its first device
        ([X, X], DeploymentStatus.SUPERSEDED),
        ([P, S], DeploymentStatus.IN_PROGRESS),
        ([R, F], DeploymentStatus.IN_PROGRESS),
        ([S, S, X], DeploymentStatus.SUCCEEDED),  # superseded targets do not count
        ([F, X], DeploymentStatus.FAILED),
        ([S, F], DeploymentStatus.PARTIAL),
    ],
)
def test_a_deployment_rolls_up_from_its_live_targets(targets: list[TargetStatus], expected: DeploymentStatus) -> None:
    assert roll_up(targets) is expected


def test_roll_up_takes_the_plain_strings_the_database_returns() -> None:
    assert roll_up(["succeeded", "failed"]) == "partial"


@pytest.mark.parametrize(
    ("update_state", "expected"),
    [("active", S), ("failed", F), ("idle", None), ("downloading", R), ("verifying", R), ("unknown", R)],
)
def test_a_device_update_state_maps_to_a_target_status(update_state: str, expected: TargetStatus | None) -> None:
    assert target_status_for(update_state) is expected


def test_terminal_statuses_are_the_finished_ones() -> None:
    assert {P, R}.isdisjoint(TERMINAL) and {S, F, X} == TERMINAL
