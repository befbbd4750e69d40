"""cloud.api.auth_budget on a fake clock: what is looked up, what is refused unlooked-up, what is bounded."""

from __future__ import annotations

from cloud.api.auth_budget import AuthBudget
from cloud.token_buckets import ClientRate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_unknown_ids_spend_the_address_budget_admitted_ids_do_not() -> None:
    clock = Clock()
    budget = AuthBudget(ClientRate(1.0, 3, clock=clock), clock=clock)
    assert [budget.wait_before_lookup("10.0.0.1", f"id{i}") for i in range(5)] == [0, 0, 0, 1, 1]
    assert budget.wait_before_lookup("10.0.0.2", "other") == 0  # another address has a budget of its own
    budget.admitted("operator")
    assert all(budget.wait_before_lookup("10.0.0.1", "operator") == 0 for _ in range(50))  # spent budget or not
    clock.now += 1.0
    assert budget.wait_before_lookup("10.0.0.1", "new") == 0  # refilled: one a second
    assert budget.lookups_spared == 2


def test_a_refused_token_is_refused_again_until_its_time_is_up() -> None:
    clock = Clock()
    budget = AuthBudget(ClientRate(1.0, 3, clock=clock), refused_ttl_s=60.0, clock=clock)
    assert not budget.refused_before("ef_a_b")
    budget.refused("ef_a_b")
    assert budget.refused_before("ef_a_b") and not budget.refused_before("ef_a_c")  # the whole token, not the id
    clock.now += 61.0
    assert not budget.refused_before("ef_a_b")


def test_memory_is_bounded() -> None:
    budget = AuthBudget(ClientRate(1.0, 3), max_remembered=100)
    for i in range(1000):
        budget.refused(f"ef_{i}_x")
        budget.admitted(f"id{i}")
    assert len(budget._refused) == 100 and len(budget._admitted) == 100
    assert budget.refused_before("ef_999_x") and not budget.refused_before("ef_0_x")
