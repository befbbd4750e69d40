"""The audit log: one row per change (who, when, what, to what), appended and never edited.

Callers record in the same transaction as the change itself, so a change without its audit row (or the
reverse) cannot be committed. Only admins read it (`GET /api/v1/audit`).
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from cloud.identity.records import AuditEntry
from cloud.identity.tokens import Operator

CLI_ACTOR = "cli"  # local commands that work on the database directly (`edgefleet tokens ...`)


def record(
    session: Session, *, actor: str, action: str, target: str = "", role: str = "", detail: dict[str, Any] | None = None
) -> AuditEntry:
    entry = AuditEntry(actor=actor, role=role, action=action, target=target[:256], detail=detail or {})
    session.add(entry)
    return entry


def record_by(
    session: Session, operator: Operator, action: str, target: str = "", detail: dict[str, Any] | None = None
) -> AuditEntry:
    """An audit row for a change an API operator made (actor: token id and name, and its role)."""
    return record(session, actor=operator.actor, role=operator.role.value, action=action, target=target,
                  detail=detail)


def entries(session: Session, *, limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
    """Newest first; page with before_id (the smallest id of the previous page)."""
    query = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit)
    if before_id is not None:
        query = query.where(col(AuditEntry.id) < before_id)
    return list(session.exec(query))
