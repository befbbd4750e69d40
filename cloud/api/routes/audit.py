"""The audit log (admin only), newest first. Read-only: nothing in the API updates or deletes its rows."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from cloud.api.auth import api_router
from cloud.api.deps import SessionDep
from cloud.api.schemas import AuditEntryPublic
from cloud.identity import audit
from cloud.identity.records import AuditEntry
from cloud.identity.tokens import Role

router = api_router(prefix="/audit", tags=["audit"], minimum=Role.ADMIN)


@router.get("", response_model=list[AuditEntryPublic])
def list_audit(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(description="the smallest id of the previous page")] = None,
) -> list[AuditEntry]:
    return audit.entries(session, limit=limit, before_id=before_id)
