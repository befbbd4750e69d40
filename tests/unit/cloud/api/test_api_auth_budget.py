"""cloud.api.auth_budget on a fake clock: what is looked up, what is refused unlooked-up, what is bounded."""

from __future__ import annotations

import pytest

from cloud.api.auth_budget import AuthBudget
from cloud.errors import TooManyRequestsError
from cloud.token_buckets import ClientRate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def charged(budget: AuthBudget, client: str, token_id: str) -> int:
    """0 when the lookup may go ahead, else the Retry-After seconds of the 429."""
    try:
        budget.charge(client, token_id)
    except TooManyRequestsError as refused:
        return int(refused.headers["Retry-After"])
    return 0


def test_unknown_ids_spend_the_address_budget_admitted_ids_do_not() -> None:
    clock = Clock()
    budget = AuthBudget(ClientRate(1.0, 3, clock=clock), clock=clock)
    assert [charged(budget, "10.0.0.1", f"id{i}") for i in range(5)] == [0, 0, 0, 1, 1]
    assert charged(budget, "10.0.0.2", "other") == 0  # another address has a budget of its own
    budget.judged("ef_operator_secret", "operator", object())
    assert all(charged(budget, "10.0.0.1", "operator") == 0 for _ in range(50))  # spent budget or not
    clock.now += 1.0
    assert charged(budget, "10.0.0.1", "new") == 0  # refilled: one a second
    assert budget.lookups_spared == 2


def test_a_refused_token_is_refused_again_until_its_time_is_up() -> None:
    clock = Clock()
    budget = AuthBudget(ClientRate(1.0, 3, clock=clock), refused_ttl_s=60.0, clock=clock)
    assert budget.admissible("ef_a_b") == ("a", "b")
    assert budget.admissible("not-ours") is None and budget.admissible("ef_a") is None
    budget.judged("ef_a_b", "a", None)
    assert budget.admissible("ef_a_b") is None and budget.admissible("ef_a_c") == ("a", "c")  # the whole token
    clock.now += 61.0
    assert budget.admissible("ef_a_b") == ("a", "b")


@pytest.mark.parametrize("admitted", [True, False])
def test_memory_is_bounded(admitted: bool) -> None:
    budget = AuthBudget(ClientRate(1.0, 3), max_remembered=100)
    for i in range(1000):
        budget.judged(f"ef_{i}_x", str(i), object() if admitted else None)
    assert len(budget._admitted if admitted else budget._refused) == 100
    if admitted:
        assert charged(budget, "c", "999") == 0 and "0" not in budget._admitted
    else:
        assert budget.admissible("ef_999_x") is None and budget.admissible("ef_0_x") is not None
