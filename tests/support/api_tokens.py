"""An operator API token made straight on a running cloud's database, for tests that call its console API."""

from __future__ import annotations

from sqlmodel import Session

from cloud.identity.tokens import Role, create_token
from cloud.service import CloudService


def operator_token(service: CloudService, role: Role = Role.VIEWER, name: str = "test") -> str:
    assert service.engine is not None
    with Session(service.engine) as session:
        _, text = create_token(session, name=name, role=role, created_by="test")
        session.commit()
    return text
