"""A challenger's canary that completes makes it `champion` and `production` (by policy).

When a rollout of a model's `challenger` completes (every wave passed its gates), every target runs it and
its targets include every device that ran the model, the challenger is what the fleet runs and it earned
it: the controller moves `champion` and `production` to it in the same transaction as the completion,
each move in the alias history with actor `controller` and why. A rollout to part of the fleet, with a
target that did not install it, or of a version that is not the challenger (a plain release) moves
nothing; `edgefleet pipeline promote` still can. `EDGEFLEET_PROMOTE_ON_CANARY=false` leaves every
promotion to an operator.
"""

from __future__ import annotations

import logging

from sqlmodel import Session, select

from cloud.db import TargetStatus
from cloud.db.tables import Deployment, DeploymentTarget, Device
from cloud.errors import NotFoundError
from cloud.registry import aliases

log = logging.getLogger(__name__)


def promote_completed_canary(
    session: Session, deployment: Deployment, waves: list[list[str]], *, actor: str
) -> list[str]:
    """Move champion and production to a completed rollout's version if it is the challenger and went to
    the whole fleet running the model; returns the aliases that moved."""
    model_id, version = deployment.model_id, deployment.version
    try:
        if aliases.resolve(session, model_id, aliases.CHALLENGER) != version:
            return []
    except NotFoundError:
        return []
    covered = {device for wave in waves for device in wave}
    statuses = session.exec(select(DeploymentTarget.status).where(DeploymentTarget.deployment_id == deployment.id))
    not_installed = sum(status != TargetStatus.SUCCEEDED for status in statuses)
    left_out = set(session.exec(select(Device.id).where(Device.active_model_id == model_id))) - covered
    if not_installed or left_out:
        log.info("%s v%s: canary completed but not promoted (%d target(s) without it, %d device(s) left out)",
                 model_id, version, not_installed, len(left_out))  # fmt: skip
        return []
    reason = (f"canary rollout {deployment.id[:8]} completed on every device running {model_id} "
              f"({len(covered)}): every wave passed its gates")  # fmt: skip
    return [alias for alias in (aliases.CHAMPION, aliases.PRODUCTION)
            if aliases.move(session, model_id, alias, version, actor=actor, reason=reason) is not None]  # fmt: skip
