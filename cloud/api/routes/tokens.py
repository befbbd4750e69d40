"""Operators' API tokens (admin only): create (the text is shown once), list, revoke; each change audited."""

from __future__ import annotations

from fastapi import Request, status

from cloud.api.auth import OperatorDep, api_router
from cloud.api.deps import SessionDep
from cloud.api.schemas import TokenCreate, TokenCreated, TokenPublic
from cloud.identity import audit, tokens
from cloud.identity.records import ApiToken
from cloud.identity.tokens import Role

router = api_router(prefix="/tokens", tags=["tokens"], minimum=Role.ADMIN)


@router.get("", response_model=list[TokenPublic])
def list_tokens(session: SessionDep) -> list[ApiToken]:
    return tokens.list_tokens(session)


@router.post("", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(session: SessionDep, operator: OperatorDep, body: TokenCreate) -> TokenCreated:
    row, text = tokens.create_token(
        session, name=body.name, role=body.role, created_by=operator.actor[:128], ttl_days=body.ttl_days
    )
    audit.record_by(session, operator, "token.create", row.id, {"name": row.name, "role": row.role,
                                                                 "ttl_days": body.ttl_days})
    session.commit()
    return TokenCreated(**TokenPublic.model_validate(row, from_attributes=True).model_dump(), token=text)


@router.delete("/{token_id}", response_model=TokenPublic)
def revoke_token(request: Request, session: SessionDep, operator: OperatorDep, token_id: str) -> ApiToken:
    row = tokens.revoke_token(session, token_id)
    audit.record_by(session, operator, "token.revoke", row.id, {"name": row.name})
    session.commit()
    request.app.state.token_cache.forget(token_id)  # refused from the next request on, not in 2 s
    session.refresh(row)
    return row
