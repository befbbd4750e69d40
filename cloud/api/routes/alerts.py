"""Drift and accuracy alerts (cloud.monitoring.alerts): active ones first, then the latest cleared."""

from __future__ import annotations

from typing import Any

from cloud.api.auth import api_router
from cloud.api.deps import SessionDep
from cloud.monitoring import alerts

router = api_router(prefix="/alerts", tags=["alerts"])


@router.get("")
def list_alerts(session: SessionDep, active: bool = False, limit: int = 200) -> list[dict[str, Any]]:
    """Alerts as the alert monitor recorded them (`active=true`: only those holding now)."""
    return alerts.listing(session, include_cleared=not active, limit=min(max(limit, 1), 1000))
