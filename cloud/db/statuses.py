"""The values a status column may hold, one StrEnum per column.

StrEnum members compare and serialise as their plain strings, so rows written before these enums existed
read back unchanged and the API shows the same JSON. The rules that move a status along live with the
concept: `cloud.registry.runs` (runs) and `cloud.rollout.status` (deployments and their targets).
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """PipelineRun.status."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class TargetStatus(StrEnum):
    """DeploymentTarget.status: where one device stands in one deployment."""

    PENDING = "pending"  # desired state published, the device has not answered that generation yet
    IN_PROGRESS = "in_progress"  # the device reports it is working on it (downloading, verifying, ...)
    SUCCEEDED = "succeeded"  # the device reports the model active
    FAILED = "failed"  # the device reports the update failed
    SUPERSEDED = "superseded"  # a newer deployment took the device over


class DeploymentStatus(StrEnum):
    """Deployment.status, rolled up from its targets (`cloud.rollout.status.roll_up`)."""

    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIAL = "partial"  # every live target finished, some succeeded and some failed
    SUPERSEDED = "superseded"  # every target was superseded
    ROLLED_BACK = "rolled_back"  # a staged rollout breached a gate (or an operator said so) and was undone
    CANCELLED = "cancelled"  # an operator stopped a staged rollout; opened waves keep what they have


class RolloutState(StrEnum):
    """Rollout.state: where the staged-rollout controller stands (`cloud.rollout.progress`)."""

    RUNNING = "running"  # a wave is open and being judged, or dwelling before the next
    PAUSED = "paused"  # a gate breached under on_breach=pause, or an operator paused it
    COMPLETED = "completed"  # every wave opened and passed
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RolloutState.COMPLETED, RolloutState.ROLLED_BACK, RolloutState.CANCELLED)
