"""The rollout commands pass every gate they take on to the API, and the API's policy accepts them."""

from __future__ import annotations

import argparse

from cloud.cli.rollout import add_target_args, request_body
from cloud.rollout.policy import RolloutPolicy


def _body(*argv: str) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    add_target_args(parser)
    return request_body(parser.parse_args(["m", "--devices", "a,b", *argv]))


def test_the_p95_jitter_allowance_reaches_the_rollout_policy() -> None:
    body = _body("--max-p95-ratio", "100", "--min-p95-increase-us", "1000000")
    policy = RolloutPolicy.model_validate(body["rollout"]).gates.policy()
    assert policy.max_p95_ratio == 100 and policy.min_p95_increase_us == 1_000_000


def test_without_it_the_default_allowance_is_the_apis() -> None:
    body = _body()
    sent = RolloutPolicy.model_validate(body["rollout"]).gates.policy()
    assert sent.min_p95_increase_us == RolloutPolicy().gates.policy().min_p95_increase_us == 250.0
