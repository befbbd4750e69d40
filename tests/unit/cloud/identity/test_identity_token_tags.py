"""cloud.identity.token_tags: ids the cloud tells from made-up ones without a lookup, and the keys behind them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from cloud.api.auth_budget import AuthBudget
from cloud.db import make_engine
from cloud.errors import InvalidRequestError, NotFoundError, TooManyRequestsError
from cloud.identity.records import TagKey
from cloud.identity.token_tags import (
    API_TOKEN,
    ENROLLMENT_TOKEN,
    Tag,
    TagKeys,
    judge_id,
    load_keys,
    mint_id,
    retire_key,
    rotate_key,
    tagged_by,
)
from cloud.token_buckets import ClientRate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_id_we_minted_is_ours_any_other_of_its_shape_is_forged_and_old_ids_are_untagged() -> None:
    keys = [b"k" * 32]
    minted = mint_id(keys, API_TOKEN)
    assert len(minted) == 22 and judge_id(keys, minted, API_TOKEN) is Tag.OURS
    altered = minted[:-1] + ("0" if minted[-1] != "0" else "1")
    assert judge_id(keys, altered, API_TOKEN) is Tag.FORGED
    assert judge_id([b"x" * 32], minted, API_TOKEN) is Tag.FORGED  # another cloud's key
    assert judge_id(keys, minted, ENROLLMENT_TOKEN) is Tag.FORGED  # an API token id is no enrollment token id
    for untagged in ("0123456789ab", "operator", minted.upper(), minted + "0"):
        assert judge_id(keys, untagged, API_TOKEN) is Tag.UNTAGGED


def test_racing_processes_create_one_key_and_all_read_it(any_engine: Engine) -> None:
    def first_use(_: int) -> list[bytes]:
        with Session(any_engine) as session:
            keys = load_keys(session)
            session.commit()
            return keys

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(first_use, range(8)))
    assert len(seen[0]) == 1 and all(keys == seen[0] for keys in seen)
    with Session(any_engine) as session:
        assert session.exec(select(func.count()).select_from(TagKey)).one() == 1


def test_rotation_keeps_old_ids_until_their_key_is_retired(any_engine: Engine) -> None:
    with Session(any_engine) as session:
        old_id = mint_id(load_keys(session), API_TOKEN)
        assert rotate_key(session) == 2
        keys = load_keys(session)
        new_id = mint_id(keys, API_TOKEN)
        assert judge_id(keys, old_id, API_TOKEN) is Tag.OURS and judge_id(keys[1:], new_id, API_TOKEN) is Tag.OURS
        with pytest.raises(InvalidRequestError):
            retire_key(session, 2)  # the newest tags new ids: never retired
        retire_key(session, 1)
        with pytest.raises(NotFoundError):
            retire_key(session, 1)
        session.commit()
        keys = load_keys(session)
    assert judge_id(keys, old_id, API_TOKEN) is Tag.FORGED and judge_id(keys, new_id, API_TOKEN) is Tag.OURS


def test_a_process_reads_the_keys_again_when_stale_and_keeps_them_while_the_database_is_out(
    any_engine: Engine, tmp_path: Path
) -> None:
    clock = Clock()
    tags = TagKeys(reload_s=60.0, clock=clock)
    tags.reload(any_engine)  # first use: creates generation 1
    with Session(any_engine) as session:
        old_id = mint_id(load_keys(session), API_TOKEN)
        rotate_key(session)
        session.commit()
        new_id = mint_id(load_keys(session), API_TOKEN)
    assert tags.judge(old_id, API_TOKEN) is Tag.OURS and tags.judge(new_id, API_TOKEN) is Tag.FORGED
    assert not tags.stale()
    clock.now += 60.0
    tags.reload(any_engine)
    assert tags.judge(new_id, API_TOKEN) is Tag.OURS  # the rotation reached this process without a restart
    unreachable = make_engine(f"sqlite:///{tmp_path / 'not-a-dir' / 'x.db'}")
    (tmp_path / "not-a-dir").rmdir()  # the engine made it; gone, the database cannot be opened
    clock.now += 60.0
    tags.reload(unreachable)
    assert tags.judge(new_id, API_TOKEN) is Tag.OURS and not tags.stale()  # kept, retried in RETRY_S
    with pytest.raises(Exception):  # noqa: B017  (whatever the driver raises)
        TagKeys().reload(unreachable)  # no keys read before: nothing to judge with


def test_the_budget_refuses_forged_ids_unlooked_up_and_never_charges_ours(any_engine: Engine) -> None:
    clock = Clock()
    budget = AuthBudget(ClientRate(0.01, 2, clock=clock), clock=clock)
    budget.tags.reload(any_engine)
    with Session(any_engine) as session:
        ours = mint_id(load_keys(session), API_TOKEN)
    forged = ours[:12] + "0" * 10 if not ours.endswith("0" * 10) else ours[:12] + "1" * 10
    assert budget.admissible(f"ef_{forged}_secret") is None and budget.forged == 1
    for old_id in ("0123456789ab", "0123456789ac"):
        budget.charge("10.0.0.1", old_id)  # old-shape ids spend the address's budget as before
    with pytest.raises(TooManyRequestsError):
        budget.charge("10.0.0.1", "0123456789ad")
    assert budget.admissible(f"ef_{ours}_secret") == (ours, "secret")
    for _ in range(50):
        budget.charge("10.0.0.1", ours)  # not admitted yet, budget spent: still no 429


def test_a_key_that_tokens_in_use_depend_on_is_retired_only_when_forced(any_engine: Engine) -> None:
    """Retiring generation 1 while `edgefleet up`'s admin token (tagged by it) is in use locked the operator
    out of the API; tokens revoked, expired or (enrollment) used do not count."""
    from cloud.errors import ConflictError
    from cloud.identity.enrollment import create_enrollment_token
    from cloud.identity.tokens import create_token, revoke_token

    with Session(any_engine) as session:
        admin, _ = create_token(session, name="operator", role="admin")
        enrollment, _ = create_enrollment_token(session, device_id="pi-01", ttl_s=2 * 86_400)
        expired, _ = create_token(session, name="old", role="viewer", ttl_days=1)
        session.commit()
        assert rotate_key(session) == 2
        later = expired.expires_at_ms + 1  # type: ignore[operator]
        assert tagged_by(session, 1, now_ms=later - 2) == sorted([admin.id, enrollment.id, expired.id])
        with pytest.raises(ConflictError, match="2 token"):
            retire_key(session, 1, now_ms=later)  # the expired one no longer counts
        revoke_token(session, admin.id)
        enrollment.used_at_ms = later
        session.add(enrollment)
        retire_key(session, 1, now_ms=later)
        session.commit()
        assert [k.generation for k in session.exec(select(TagKey))] == [2]
        assert tagged_by(session, 2, now_ms=later) == []  # nothing was issued after the rotation
