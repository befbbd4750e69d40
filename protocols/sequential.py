"""The sequential test the cloud's rollout gates and the agent's probation share (pure, numpy only).

`error_log_likelihood_ratio` is a mixture likelihood ratio of "the rate of bad outcomes (errors, shadow
disagreements) is q" against "it is `limit`": under any rate <= limit its expectation never grows with more
outcomes (a supermartingale), so by Ville's inequality the chance that it EVER reaches log(1 / alpha),
however often it is looked at, is at most alpha. The cloud's gates breach a wave early on it
(`cloud.rollout.gates`); the agent rolls a model on probation back by itself when its shadow disagrees with
the previous model overwhelmingly (`edge_agent.update.probation`), with no cloud reachable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def doubling_alternatives(limit: float) -> list[float]:
    """2, 4, 8, ... x limit, up to 0.99: alternatives for a small limit (an error rate of 1 %)."""
    return sorted({min(0.99, limit * 2**k) for k in range(1, 64) if limit * 2 ** (k - 1) < 0.99})


def even_alternatives(limit: float, count: int = 8) -> list[float]:
    """`count` rates evenly between limit and 0.99 (excluded, included): alternatives for a large limit,
    where doubling would leave only 0.99 (a shadow disagreeing half the time)."""
    return [limit + (0.99 - limit) * k / count for k in range(1, count + 1)]


def error_log_likelihood_ratio(errors: Any, answered: Any, limit: float,
                               alternatives: Sequence[float] | None = None) -> Any:  # fmt: skip
    """log of the mixture likelihood ratio of "rate q" (each of `alternatives`, default
    `doubling_alternatives(limit)`, equally weighted) against "rate = limit", for `errors` bad and
    `answered` good outcomes (numbers, or arrays of them)."""
    e, a = np.asarray(errors, dtype=float), np.asarray(answered, dtype=float)
    if limit <= 0:
        return np.where(e > 0, math.inf, 0.0)[()]
    if limit >= 0.99:
        return np.full(e.shape, -math.inf)[()]  # nothing can be proved worse than (almost) always failing
    q = np.array(alternatives if alternatives is not None else doubling_alternatives(limit))
    ratios = e[..., None] * np.log(q / limit) + a[..., None] * np.log((1 - q) / (1 - limit))
    top = np.max(ratios, axis=-1, keepdims=True)  # log-sum-exp, shifted by the largest term
    total = top[..., 0] + np.log(np.sum(np.exp(ratios - top), axis=-1))
    return (total - math.log(len(q)))[()]
