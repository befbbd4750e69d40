"""Rollout status rules, pure: how a device's report moves its target, and how a deployment's status
rolls up from its targets' statuses. No database here; `cloud.rollout.deployments` applies these to rows.

The allowed values are the StrEnums of `cloud.db.statuses` (the columns that hold them).
"""

from __future__ import annotations

from collections.abc import Iterable

from cloud.db.statuses import DeploymentStatus, RolloutState, TargetStatus

# a target in one of these has its answer: the device finished (either way) or another deployment took over
TERMINAL = frozenset({TargetStatus.SUCCEEDED, TargetStatus.FAILED, TargetStatus.SUPERSEDED})


def roll_up(target_statuses: Iterable[str]) -> DeploymentStatus:
    """A deployment's status from its targets' statuses.

    superseded   every target was superseded
    in_progress  no live target yet (a label deployment waits for a device to appear), or one is unfinished
    succeeded    every live target succeeded
    failed       every live target failed
    partial      every live target finished, some succeeded and some failed
    """
    statuses = list(target_statuses)
    live = [s for s in statuses if s != TargetStatus.SUPERSEDED]
    if statuses and not live:
        return DeploymentStatus.SUPERSEDED
    if not live or any(s not in TERMINAL for s in live):
        return DeploymentStatus.IN_PROGRESS
    if all(s == TargetStatus.SUCCEEDED for s in live):
        return DeploymentStatus.SUCCEEDED
    if all(s == TargetStatus.FAILED for s in live):
        return DeploymentStatus.FAILED
    return DeploymentStatus.PARTIAL


def rollout_status(state: RolloutState, target_statuses: Iterable[str]) -> DeploymentStatus:
    """A staged rollout's deployment status: in progress while its controller runs it (or it is paused),
    rolled back or cancelled as it ended, else rolled up from its targets once every wave is open."""
    if state is RolloutState.ROLLED_BACK:
        return DeploymentStatus.ROLLED_BACK
    if state is RolloutState.CANCELLED:
        return DeploymentStatus.CANCELLED
    if not state.finished:
        return DeploymentStatus.IN_PROGRESS
    return roll_up(target_statuses)


def target_status_for(update_state: str) -> TargetStatus | None:
    """The target status a device's update state (`cloud.fleet.update_state_name`) means, or None when it
    says nothing about the target (idle: the device has not started on it)."""
    if update_state == "active":
        return TargetStatus.SUCCEEDED
    if update_state == "failed":
        return TargetStatus.FAILED
    return None if update_state == "idle" else TargetStatus.IN_PROGRESS
