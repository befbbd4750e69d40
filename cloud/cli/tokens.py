"""`edgefleet tokens create|list|revoke|rotate-key|retire-key`: operators' API tokens, and the keys that tag
their ids (cloud.identity.token_tags), straight on the database (like `train`).

They bypass the API on purpose: the first admin token has to come from somewhere. Each change writes an
audit row with actor "cli" in the same transaction.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from sqlmodel import Session

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction) -> None:
    tokens = subparsers.add_parser("tokens", help="create, list and revoke operators' API tokens")
    actions = tokens.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a token and print it (shown once)")
    create.add_argument("--name", required=True, help="who or what uses it, e.g. 'ci' or 'alice'")
    create.add_argument("--role", required=True, choices=["viewer", "deployer", "admin"])
    create.add_argument("--ttl-days", type=float, help="expire after this many days (default: never)")
    create.set_defaults(func=_create)
    listing = actions.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--json", action="store_true", help="print JSON (as GET /api/v1/tokens) instead of a table")
    listing.set_defaults(func=_list)
    revoke = actions.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")
    revoke.set_defaults(func=_revoke)
    rotate = actions.add_parser("rotate-key", help="tag new token ids with a new key; ids tagged before still work")
    rotate.set_defaults(func=_rotate_key)
    retire = actions.add_parser("retire-key", help="delete an old tag key: ids it tagged stop working "
                                "(reissue those tokens first)")  # fmt: skip
    retire.add_argument("generation", type=int)
    retire.add_argument("--force", action="store_true",
                        help="retire it even though tokens in use carry ids it tagged (they stop working)")
    retire.set_defaults(func=_retire_key)
    for parser in (create, listing, revoke, rotate, retire):
        parser.add_argument("--data-dir", type=Path, help="the same data dir as `edgefleet up` (default .edgefleet)")
        parser.add_argument("--database-url", help="the same database as `edgefleet up`")


def _session(args: argparse.Namespace) -> Session:
    from sqlmodel import Session

    from cloud.db import create_tables, make_engine
    from cloud.settings import CloudSettings

    overrides = {"data_dir": args.data_dir, "database_url": args.database_url}
    settings = CloudSettings(**{k: v for k, v in overrides.items() if v is not None})
    engine = make_engine(settings.database)
    create_tables(engine)
    return Session(engine)


def _committed(args: argparse.Namespace, change: Callable[[Session], T]) -> T | None:
    """change(session) (the change and its audit row) committed in one transaction; None, with the error
    printed in one line, when the change was refused."""
    from cloud.errors import CloudError

    try:
        with _session(args) as session:
            result = change(session)
            session.commit()
            return result
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _create(args: argparse.Namespace) -> int:
    from cloud.identity import audit, tokens

    def change(session: Session) -> tuple[str, str, str]:
        row, text = tokens.create_token(
            session, name=args.name, role=args.role, created_by=audit.CLI_ACTOR, ttl_days=args.ttl_days
        )
        token_id, role = row.id, row.role  # read before the commit expires the row
        audit.record(session, actor=audit.CLI_ACTOR, action="token.create", target=token_id,
                     detail={"name": row.name, "role": role, "ttl_days": args.ttl_days})
        return text, token_id, role

    created = _committed(args, change)
    if created is None:
        return 1
    text, token_id, role = created
    print(text)
    print(f"# token {token_id} ({role}); shown once. Use it: --token, EDGEFLEET_TOKEN=... or "
          "'Authorization: Bearer ...'")
    return 0


def _list(args: argparse.Namespace) -> int:
    from cloud.api.schemas import TokenPublic
    from cloud.cli.tables import Column, print_rows
    from cloud.identity import tokens
    from cloud.types import now_ms

    with _session(args) as session:
        rows = [TokenPublic.model_validate(row, from_attributes=True).model_dump()
                for row in tokens.list_tokens(session)]
    now = now_ms()

    def state(row: dict) -> str:
        expired = row["expires_at_ms"] is not None and row["expires_at_ms"] <= now
        return "revoked" if row["revoked_at_ms"] is not None else "expired" if expired else "active"

    columns = [Column("id", lambda r: r["id"], key=True), Column("role", lambda r: r["role"]),
               Column("state", state), Column("name", lambda r: r["name"])]
    print_rows(rows, columns, as_json=args.json)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from cloud.identity import audit, tokens

    def change(session: Session) -> bool:
        row = tokens.revoke_token(session, args.token_id)
        audit.record(session, actor=audit.CLI_ACTOR, action="token.revoke", target=row.id, detail={"name": row.name})
        return True

    if _committed(args, change) is None:
        return 1
    print(f"revoked {args.token_id}")
    return 0


def _rotate_key(args: argparse.Namespace) -> int:
    from cloud.identity import audit, token_tags

    def change(session: Session) -> int:
        generation = token_tags.rotate_key(session)
        audit.record(session, actor=audit.CLI_ACTOR, action="tag_key.rotate", target=str(generation))
        return generation

    generation = _committed(args, change)
    if generation is None:
        return 1
    print(f"new token ids are tagged with key generation {generation} (running clouds within a minute); "
          f"once the tokens are reissued: edgefleet tokens retire-key {generation - 1}")
    return 0


def _retire_key(args: argparse.Namespace) -> int:
    from cloud.identity import audit, token_tags

    def change(session: Session) -> bool:
        token_tags.retire_key(session, args.generation, force=args.force)
        audit.record(session, actor=audit.CLI_ACTOR, action="tag_key.retire", target=str(args.generation))
        return True

    if _committed(args, change) is None:
        return 1
    print(f"retired key generation {args.generation}: token ids it tagged are refused (within a minute)")
    return 0
