"""The champion/challenger rule: does a retrained model beat the one in production by the stated margin?
Pure: the evaluation has already run; this judges its paired outcomes.

Both models are scored on the same rows, so each comparison is paired: of the rows only one model gets
right, b favour the challenger and c the champion, and the accuracy difference is (b - c) / n with the
usual paired (McNemar-style) normal interval. The challenger wins only when
  * on recent labelled field data, the lower 95 % bound of its gain is above `margin` (it is better by at
    least the margin, not just by luck), and
  * on held-out reference data, the lower bound of its gain is above `-max_reference_loss` (whatever it
    learnt from the field, it did not forget the reference task by more than that).
With fewer than `min_field_rows` labelled field rows (or `min_reference_rows` reference rows) the verdict
is INCONCLUSIVE: wait for more labels rather than judge on a handful.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from cloud.experiments.stats import Proportion, wilson_interval

Z95 = 1.959964


class Outcome(StrEnum):
    WIN = "win"
    LOSE = "lose"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class MarginPolicy:
    margin: float = 0.02  # the field gain's lower bound must exceed this
    max_reference_loss: float = 0.03  # the reference gain's lower bound must exceed minus this
    min_field_rows: int = 30
    min_reference_rows: int = 30

    def __post_init__(self) -> None:
        if not -1 < self.margin < 1 or not 0 <= self.max_reference_loss < 1:
            raise ValueError("margin must be in (-1, 1) and max_reference_loss in [0, 1)")
        if self.min_field_rows < 1 or self.min_reference_rows < 1:
            raise ValueError("min_field_rows and min_reference_rows must be at least 1")


@dataclass(frozen=True)
class Comparison:
    """Champion and challenger on the same n rows."""

    name: str
    n: int
    champion_correct: int
    challenger_correct: int
    challenger_only: int  # rows only the challenger got right (b)
    champion_only: int  # rows only the champion got right (c)

    @property
    def champion_accuracy(self) -> float | None:
        return self.champion_correct / self.n if self.n else None

    @property
    def challenger_accuracy(self) -> float | None:
        return self.challenger_correct / self.n if self.n else None

    def champion_interval(self) -> tuple[float, float] | None:
        return wilson_interval(Proportion(self.champion_correct, self.n))

    def challenger_interval(self) -> tuple[float, float] | None:
        return wilson_interval(Proportion(self.challenger_correct, self.n))

    @property
    def gain(self) -> float | None:
        return (self.challenger_only - self.champion_only) / self.n if self.n else None

    def gain_interval(self) -> tuple[float, float] | None:
        """95 % interval of the paired accuracy difference (challenger - champion)."""
        if not self.n:
            return None
        b, c, n = self.challenger_only, self.champion_only, self.n
        se = math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
        d = (b - c) / n
        return max(-1.0, d - Z95 * se), min(1.0, d + Z95 * se)


def compare(name: str, truth: Sequence[str], champion: Sequence[str], challenger: Sequence[str]) -> Comparison:
    """Pair the two models' predictions with the truth, row by row."""
    if not len(truth) == len(champion) == len(challenger):
        raise ValueError(f"{name}: {len(truth)} labels, {len(champion)} and {len(challenger)} predictions")
    a = [p == t for p, t in zip(champion, truth, strict=True)]
    b = [p == t for p, t in zip(challenger, truth, strict=True)]
    return Comparison(name, len(truth), sum(a), sum(b), sum(y and not x for x, y in zip(a, b, strict=True)),
                      sum(x and not y for x, y in zip(a, b, strict=True)))  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reasons: list[str] = field(default_factory=list)


def judge(field_rows: Comparison, reference: Comparison, policy: MarginPolicy) -> Verdict:
    """WIN only when the challenger gains at least the margin on field data without losing more than
    allowed on reference data; INCONCLUSIVE on too few rows."""
    short = []
    if field_rows.n < policy.min_field_rows:
        short.append(f"{field_rows.n} labelled field rows, {policy.min_field_rows} needed")
    if reference.n < policy.min_reference_rows:
        short.append(f"{reference.n} reference rows, {policy.min_reference_rows} needed")
    if short:
        return Verdict(Outcome.INCONCLUSIVE, short)
    field_low = field_rows.gain_interval()[0]  # type: ignore[index]
    reference_low = reference.gain_interval()[0]  # type: ignore[index]
    reasons = []
    wins = True
    if field_low > policy.margin:
        reasons.append(f"field gain {field_rows.gain:+.3f} (95 % low {field_low:+.3f}) > margin {policy.margin:+.3f}")
    else:
        wins = False
        reasons.append(f"field gain {field_rows.gain:+.3f} (95 % low {field_low:+.3f}) not above margin "
                       f"{policy.margin:+.3f}")  # fmt: skip
    if reference_low > -policy.max_reference_loss:
        reasons.append(f"reference gain {reference.gain:+.3f} (95 % low {reference_low:+.3f}) within "
                       f"-{policy.max_reference_loss:.3f}")  # fmt: skip
    else:
        wins = False
        reasons.append(f"reference gain {reference.gain:+.3f} (95 % low {reference_low:+.3f}) loses more than "
                       f"{policy.max_reference_loss:.3f}")  # fmt: skip
    return Verdict(Outcome.WIN if wins else Outcome.LOSE, reasons)
