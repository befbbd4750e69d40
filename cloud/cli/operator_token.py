"""The operator token on this machine: `up` creates one in development, the remote commands find it.

In development `edgefleet up` creates an admin token on first start (when the database has no usable admin
token and the file holds none that works) and writes it, mode 0600, to `<data_dir>/operator.token`, so the
README's `edgefleet deploy|devices|models` work with no extra step. Production never does this: there the
first admin token comes from `edgefleet tokens create --role admin` on the database itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from cloud.identity import audit
from cloud.identity.records import ApiToken
from cloud.identity.tokens import Role, authenticate, create_token
from cloud.types import now_ms

TOKEN_FILE = "operator.token"
TOKEN_ENV = "EDGEFLEET_TOKEN"
DEV_TOKEN_NAME = "operator (created by edgefleet up)"


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def write_token_file(path: Path, token: str) -> None:
    """Write token readable by its owner only (created 0600, never briefly wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


def read_token_file(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None


def ensure_dev_token(engine: Engine, data_dir: Path) -> tuple[Path, bool] | None:
    """(path, created) of a working admin token file, creating the token if there is no admin token at all;
    None when admin tokens exist but the file holds none of them (an operator manages tokens: ask them)."""
    path = token_path(data_dir)
    with Session(engine) as session:
        existing = read_token_file(path)
        if existing and authenticate(session, existing) is not None:
            return path, False
        current = now_ms()
        admins = session.exec(
            select(ApiToken).where(ApiToken.role == Role.ADMIN.value, col(ApiToken.revoked_at_ms).is_(None))
        ).all()
        if any(t.expires_at_ms is None or t.expires_at_ms > current for t in admins):
            return None
        row, text = create_token(session, name=DEV_TOKEN_NAME, role=Role.ADMIN, created_by=audit.CLI_ACTOR)
        audit.record(session, actor=audit.CLI_ACTOR, action="token.create", target=row.id,
                     detail={"name": row.name, "role": row.role, "by": "edgefleet up (development)"})
        session.commit()
    write_token_file(path, text)
    return path, True


def resolve_token(flag: str | None, data_dir: Path) -> str | None:
    """The token the remote commands send: --token, else $EDGEFLEET_TOKEN, else <data_dir>/operator.token."""
    return flag or os.environ.get(TOKEN_ENV) or read_token_file(token_path(data_dir))
