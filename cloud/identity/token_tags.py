"""Token ids the cloud recognises as its own without a database lookup: each carries a keyed tag.

An id issued here reads `<12 hex random><10 hex tag>`, the tag the first 40 bits of
HMAC-SHA256(key, purpose + ":" + random). Judging an id costs one HMAC per kept key and no lookup:
  - OURS: the tag is right under a kept key; the id may be looked up (it is still only an id: the secret is
    checked against its stored hash as before, revocation and expiry as before).
  - FORGED: the id has the tagged shape but no kept key made its tag: refused at once. A guesser needs
    2^40 tries on average per id that merely reaches a lookup.
  - UNTAGGED: any other shape, e.g. the 12-hex ids issued before tags: the caller judges it as before
    (through the per-address budget of lookups, cloud.api.auth_budget).
The purpose (API token, enrollment token) is part of the tagged text, so an id of one kind is no id of the other.

Where the keys live: rows of `tag_key` in the cloud's database, so every API process and every cloud on one
database shares them. The first process that needs a key creates generation 1 (INSERT ... ON CONFLICT DO
NOTHING, then read back: of racing processes one inserts, all read the same row, on PostgreSQL and SQLite).
A process keeps the keys `RELOAD_S` and reads them again after that, so a new generation reaches every
process without a restart.

Rotation (a key that may have leaked): `edgefleet tokens rotate-key` adds the next generation; new ids are
tagged with it, ids tagged by an older kept generation still verify. Reissue the tokens (create new ones,
revoke the old), then `edgefleet tokens retire-key GENERATION` deletes the old row: ids it tagged are
FORGED from then on (within RELOAD_S in running processes). A leaked key alone admits nothing (the secret
is still checked): it lets a flooder make ids that each cost a lookup outside the per-address budget, until
the key is rotated and retired.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from enum import Enum

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from cloud.db.engine import read_only
from cloud.db.sql import insert_ignore
from cloud.errors import ConflictError, InvalidRequestError, NotFoundError
from cloud.identity.records import ApiToken, EnrollmentToken, TagKey
from cloud.types import now_ms as time_ms

API_TOKEN = "api-token"
ENROLLMENT_TOKEN = "enrollment-token"
RANDOM_HEX = 12  # as the ids issued before tags: 48 random bits
TAG_HEX = 10  # 40 bits
RELOAD_S = 60.0
RETRY_S = 5.0  # after a failed reload, while the keys read before are kept
log = logging.getLogger(__name__)
_TAGGED = re.compile(rf"^[0-9a-f]{{{RANDOM_HEX + TAG_HEX}}}$")


class Tag(Enum):
    OURS = "ours"
    FORGED = "forged"
    UNTAGGED = "untagged"


def _tag(key: bytes, purpose: str, random_part: str) -> str:
    return hmac.new(key, f"{purpose}:{random_part}".encode(), hashlib.sha256).hexdigest()[:TAG_HEX]


def mint_id(keys: Sequence[bytes], purpose: str) -> str:
    """A new random id tagged with the newest key (keys oldest first, as `load_keys` returns them)."""
    random_part = secrets.token_hex(RANDOM_HEX // 2)
    return random_part + _tag(keys[-1], purpose, random_part)


def judge_id(keys: Sequence[bytes], token_id: str, purpose: str) -> Tag:
    if not _TAGGED.match(token_id):
        return Tag.UNTAGGED
    random_part, tag = token_id[:RANDOM_HEX], token_id[RANDOM_HEX:]
    ours = False
    for key in keys:  # every key, not the first match: the time taken says nothing of which one matched
        ours |= hmac.compare_digest(_tag(key, purpose, random_part), tag)
    return Tag.OURS if ours else Tag.FORGED


def _rows(session: Session) -> list[TagKey]:
    return list(session.exec(select(TagKey).order_by(col(TagKey.generation))))


def load_keys(session: Session) -> list[bytes]:
    """Every kept key, oldest generation first; generation 1 is created if there is none (in the caller's
    transaction, which must commit for other processes to see it)."""
    rows = _rows(session)
    if not rows:
        insert_ignore(session, TagKey, [{"generation": 1, "secret_hex": secrets.token_hex(32)}], ["generation"])
        rows = _rows(session)
    return [bytes.fromhex(row.secret_hex) for row in rows]


def rotate_key(session: Session) -> int:
    """Add the next generation (it tags ids from now on); returns it. The caller commits."""
    load_keys(session)  # generation 1 exists after this
    generation = max(session.exec(select(TagKey.generation))) + 1
    if insert_ignore(session, TagKey, [{"generation": generation, "secret_hex": secrets.token_hex(32)}],
                     ["generation"]) != 1:  # fmt: skip
        raise ConflictError(f"generation {generation} was added meanwhile: rotate again if another one is wanted")
    return generation


def tagged_by(session: Session, generation: int, *, now_ms: int) -> list[str]:
    """The ids of the tokens still in use (API tokens neither revoked nor expired, enrollment tokens neither
    used nor expired) that `generation`'s key tagged: what retiring it would lock out."""
    row = session.get(TagKey, generation)
    if row is None:
        return []
    key = bytes.fromhex(row.secret_hex)
    api = session.exec(select(ApiToken.id).where(col(ApiToken.revoked_at_ms).is_(None))
                       .where(col(ApiToken.expires_at_ms).is_(None) | (col(ApiToken.expires_at_ms) > now_ms)))
    enrollment = session.exec(select(EnrollmentToken.id).where(col(EnrollmentToken.used_at_ms).is_(None))
                              .where(col(EnrollmentToken.expires_at_ms) > now_ms))  # fmt: skip
    return sorted([i for i in api if judge_id([key], i, API_TOKEN) is Tag.OURS]
                  + [i for i in enrollment if judge_id([key], i, ENROLLMENT_TOKEN) is Tag.OURS])  # fmt: skip


def retire_key(session: Session, generation: int, *, force: bool = False, now_ms: int | None = None) -> None:
    """Delete an old generation: ids it tagged are refused from then on. The newest cannot be retired, nor,
    unless `force`, one that tokens still in use depend on (the admin token `edgefleet up` wrote, say)."""
    generations = sorted(session.exec(select(TagKey.generation)))
    if generation not in generations:
        raise NotFoundError(f"no tag key of generation {generation}")
    if generation == generations[-1]:
        raise InvalidRequestError(f"generation {generation} is the newest: rotate first, then retire the old one")
    in_use = [] if force else tagged_by(session, generation, now_ms=time_ms() if now_ms is None else now_ms)
    if in_use:
        shown = ", ".join(in_use[:5]) + (f" and {len(in_use) - 5} more" if len(in_use) > 5 else "")
        raise ConflictError(f"{len(in_use)} token(s) in use still carry ids tagged by generation {generation} "
                            f"({shown}): reissue them first (create new ones, revoke these), or retire with --force")
    row = session.get(TagKey, generation)
    session.delete(row)


class TagKeys:
    """This process's copy of the keys: read on first use and again once older than reload_s. Thread-safe."""

    def __init__(self, reload_s: float = RELOAD_S, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.reload_s, self._clock = reload_s, clock
        self._keys: tuple[bytes, ...] = ()
        self._loaded_at: float | None = None
        self._lock = threading.Lock()

    def stale(self) -> bool:
        return self._loaded_at is None or self._clock() - self._loaded_at >= self.reload_s

    def reload(self, engine: Engine) -> None:
        """Read the keys again in sessions of their own: a read (beside the writers, on SQLite), and only on a
        database without keys a write that makes generation 1 and commits it for the other processes. While
        the database is out, the keys read before are kept and the read retried shortly."""
        with self._lock:  # one reader at a time; the others then find them fresh
            if not self.stale():
                return
            try:
                with Session(read_only(engine)) as session:
                    keys = tuple(bytes.fromhex(row.secret_hex) for row in _rows(session))
                if not keys:
                    with Session(engine) as session:
                        keys = tuple(load_keys(session))
                        session.commit()
            except Exception:
                if not self._keys:
                    raise  # nothing to judge with: the request fails as its lookup would have
                log.warning("could not read the token tag keys again; keeping those read before", exc_info=True)
                self._loaded_at = self._clock() - self.reload_s + RETRY_S
                return
            self._keys, self._loaded_at = keys, self._clock()

    def judge(self, token_id: str, purpose: str) -> Tag:
        """The id's tag against the keys read last (call `reload` first when `stale`)."""
        return judge_id(self._keys, token_id, purpose)
