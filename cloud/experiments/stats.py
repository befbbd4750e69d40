"""Statistics for comparing two arms on a proportion (accuracy, error rate). Pure: standard library only.

Wilson score intervals for each arm (sound at small counts and near 0 or 1, where the normal
approximation is not) and a two-sided two-proportion z-test with a pooled standard error for the
difference. A winner is declared only when the test is significant at `alpha` and both arms have at
least `min_trials` trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_NORMAL = NormalDist()


@dataclass(frozen=True)
class Proportion:
    successes: int
    trials: int

    @property
    def rate(self) -> float | None:
        return self.successes / self.trials if self.trials else None


def wilson_interval(p: Proportion, confidence: float = 0.95) -> tuple[float, float] | None:
    if p.trials == 0:
        return None
    z = _NORMAL.inv_cdf(0.5 + confidence / 2)
    n, phat = p.trials, p.successes / p.trials
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_p_value(a: Proportion, b: Proportion) -> float | None:
    """Two-sided p-value of 'a and b have the same rate'; None without trials on both sides."""
    if a.trials == 0 or b.trials == 0:
        return None
    pooled = (a.successes + b.successes) / (a.trials + b.trials)
    se = math.sqrt(pooled * (1 - pooled) * (1 / a.trials + 1 / b.trials))
    if se == 0:
        return 1.0  # both all-success or all-failure: no evidence of a difference
    z = (a.successes / a.trials - b.successes / b.trials) / se
    return 2 * (1 - _NORMAL.cdf(abs(z)))


@dataclass(frozen=True)
class Comparison:
    p_value: float | None
    winner: str | None  # "a", "b" or None (no significant difference yet)


def compare(a: Proportion, b: Proportion, *, higher_is_better: bool, alpha: float = 0.05,
            min_trials: int = 100) -> Comparison:  # fmt: skip
    p = two_proportion_p_value(a, b)
    if p is None or p >= alpha or min(a.trials, b.trials) < min_trials:
        return Comparison(p, None)
    a_better = (a.rate or 0) > (b.rate or 0)
    return Comparison(p, "a" if a_better == higher_is_better else "b")
