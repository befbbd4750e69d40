"""Two-sample statistics on binned counts (pure: numpy, plus scipy.special for two distribution tails).

Each function takes one sample per side (1-d counts, scalar results) or many (2-d, one test per row,
array results; a 1-d side is shared by every row), so a report's thousands of tests run as a few array
operations per feature.

Devices send counts over the reference profile's bins; the reference itself is a sample (the training
rows), so every test here is a *two-sample* test: it pools both samples for its expectation instead of
treating the reference proportions as exact (which inflates false positives as the live side grows).

    chi_square_two_sample / g_test   homogeneity of two binned samples; sparse bins are merged first on
                                     the pooled counts (a function of the margins only, so the test stays
                                     valid) until every bin expects >= `min_expected` rows in each sample
    binned_ks                        KS on the bin edges: a lower bound on the continuous statistic, so its
                                     p-value is conservative; `upper` bounds the continuous statistic
                                     (the discretisation bound: + the largest bin mass)
    psi / js_distance                effect sizes on additively smoothed proportions (no 1e-4 floor that
                                     turns an empty bin into +0.69 PSI); `psi_expected_null` is the PSI two
                                     samples of these sizes show with no drift at all, so an effect is what
                                     exceeds it
    fdr_adjust                       Benjamini-Hochberg (independent or positively dependent tests) or
                                     Benjamini-Yekutieli (any dependence) adjusted p-values (q-values)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import chdtrc, kolmogorov

Counts = Sequence[float] | np.ndarray
FdrMethod = Literal["bh", "by"]

MIN_EXPECTED = 5.0  # Cochran's rule of thumb for the chi-square approximation
SMOOTHING = 0.5  # Jeffreys: half a count added to every bin for the effect sizes


def _pair(a: Counts, b: Counts) -> tuple[np.ndarray, np.ndarray, bool]:
    """Both as (samples, bins) float arrays (a 1-d side broadcasts); True when both came 1-d."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim not in (1, 2) or y.ndim not in (1, 2) or x.size == 0 and y.size == 0:
        raise ValueError("counts must be 1-d (one sample) or 2-d (one sample per row)")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"bin count mismatch: {x.shape[-1]} and {y.shape[-1]} bins")
    if (x < 0).any() or (y < 0).any() or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("counts must be finite and non-negative")
    single = x.ndim == 1 and y.ndim == 1
    x2, y2 = np.atleast_2d(x), np.atleast_2d(y)
    rows = max(x2.shape[0], y2.shape[0])
    return np.broadcast_to(x2, (rows, x2.shape[1])), np.broadcast_to(y2, (rows, y2.shape[1])), single


def _out(values: np.ndarray, single: bool) -> Any:
    return float(values[0]) if single else values


@dataclass(frozen=True)
class TestResult:
    statistic: Any  # float, or an array with one value per sample (2-d input)
    dof: Any  # 0: nothing to test (one bin left after merging, or an empty sample)
    p_value: Any


def _merge(x: np.ndarray, y: np.ndarray, min_expected: float) -> tuple[np.ndarray, np.ndarray]:
    pooled = x + y
    small = np.minimum(x.sum(axis=1), y.sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.where(small > 0, min_expected * pooled.sum(axis=1) / small, np.inf)  # pooled rows a bin needs
    rows, bins = x.shape
    group = np.zeros((rows, bins), dtype=np.int64)
    current, acc = np.zeros(rows, dtype=np.int64), np.zeros(rows)
    for j in range(bins):
        group[:, j] = current
        acc += pooled[:, j]
        full = acc >= need
        current = current + full
        acc[full] = 0.0
    # a remainder that never reached `need` joins the group before it
    open_group = (acc > 0) & (current > 0)
    group = np.where(open_group[:, None] & (group == current[:, None]), group - 1, group)
    index = (np.repeat(np.arange(rows), bins), group.ravel())
    mx, my = np.zeros((rows, bins)), np.zeros((rows, bins))
    np.add.at(mx, index, x.ravel())
    np.add.at(my, index, y.ravel())
    return mx, my


def merge_sparse_bins(a: Counts, b: Counts, min_expected: float = MIN_EXPECTED) -> tuple[np.ndarray, np.ndarray]:
    """Merge adjacent bins (left to right, a last remainder into its left neighbour) until each bin's
    pooled count, scaled to the smaller sample, reaches `min_expected`. Bins are ordered, so neighbours
    are the natural partners. Merged bins are returned first, emptied ones dropped (1-d input) or left
    as zero columns (2-d input)."""
    x, y, single = _pair(a, b)
    mx, my = _merge(x, y, min_expected)
    if single:
        keep = (mx[0] + my[0]) > 0
        return mx[0][keep], my[0][keep]
    return mx, my


def _homogeneity(a: Counts, b: Counts, min_expected: float, likelihood_ratio: bool) -> TestResult:
    x, y, single = _pair(a, b)
    mx, my = _merge(x, y, min_expected)
    pooled = mx + my
    total, nx, ny = pooled.sum(axis=1), mx.sum(axis=1), my.sum(axis=1)
    testable = (nx > 0) & (ny > 0)
    dof = np.where(testable, np.maximum((pooled > 0).sum(axis=1) - 1, 0), 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total[:, None] > 0, pooled / total[:, None], 0.0)
        ex, ey = share * nx[:, None], share * ny[:, None]
        if likelihood_ratio:
            terms = np.where(mx > 0, mx * np.log(mx / ex), 0.0) + np.where(my > 0, my * np.log(my / ey), 0.0)
            statistic = np.maximum(2.0 * terms.sum(axis=1), 0.0)
        else:
            terms = np.where(ex > 0, (mx - ex) ** 2 / ex, 0.0) + np.where(ey > 0, (my - ey) ** 2 / ey, 0.0)
            statistic = terms.sum(axis=1)
    statistic = np.where(dof > 0, statistic, 0.0)
    p_value = np.where(dof > 0, chdtrc(np.maximum(dof, 1), statistic), 1.0)
    return TestResult(_out(statistic, single), int(dof[0]) if single else dof, _out(p_value, single))


def chi_square_two_sample(a: Counts, b: Counts, min_expected: float = MIN_EXPECTED) -> TestResult:
    """Pearson's chi-square test of homogeneity of two binned samples (rows of 2-d input: one test each)."""
    return _homogeneity(a, b, min_expected, likelihood_ratio=False)


def g_test(a: Counts, b: Counts, min_expected: float = MIN_EXPECTED) -> TestResult:
    """The likelihood-ratio (G) test of homogeneity; same null distribution as the chi-square."""
    return _homogeneity(a, b, min_expected, likelihood_ratio=True)


@dataclass(frozen=True)
class KsResult:
    statistic: Any  # max |F_a - F_b| over the bin edges: <= the continuous statistic
    upper: Any  # the continuous statistic is at most this (statistic + the largest bin mass)
    p_value: Any  # from `statistic`: conservative for the continuous test


def binned_ks(a: Counts, b: Counts) -> KsResult:
    x, y, single = _pair(a, b)
    n, m = x.sum(axis=1), y.sum(axis=1)
    ok = (n > 0) & (m > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p, q = x / np.where(ok, n, 1)[:, None], y / np.where(ok, m, 1)[:, None]
        d = np.where(ok, np.max(np.abs(np.cumsum(p, axis=1) - np.cumsum(q, axis=1)), axis=1), 0.0)
        # inside a bin both CDFs rise by at most that bin's mass, so the unseen gap is bounded by it
        upper = np.where(ok, np.minimum(1.0, d + np.max(np.maximum(p, q), axis=1)), 1.0)
        # P(D >= d), asymptotic with Stephens' small-sample correction
        en = np.sqrt(np.where(ok, n * m / np.where(ok, n + m, 1), 1.0))
        p_value = np.where(ok & (d > 0), np.minimum(1.0, kolmogorov((en + 0.12 + 0.11 / en) * d)), 1.0)
    return KsResult(_out(d, single), _out(upper, single), _out(p_value, single))


def smoothed(counts: Counts, smoothing: float = SMOOTHING) -> np.ndarray:
    arr = np.asarray(counts, dtype=float)
    return (arr + smoothing) / (arr.sum(axis=-1, keepdims=True) + smoothing * arr.shape[-1])


def psi(a: Counts, b: Counts, smoothing: float = SMOOTHING) -> Any:
    """Population Stability Index of b against a, on smoothed proportions."""
    x, y, single = _pair(a, b)
    if (x.sum(axis=1) <= 0).any() or (y.sum(axis=1) <= 0).any():
        raise ValueError("counts sum to zero")
    p, q = smoothed(x, smoothing), smoothed(y, smoothing)
    return _out(np.sum((q - p) * np.log(q / p), axis=1), single)


def psi_expected_null(bins: int, n_a: Any, n_b: Any) -> Any:
    """PSI expected between two samples of sizes n_a and n_b from one distribution over `bins` bins:
    PSI is close to the chi-square statistic over the harmonic sample size, (bins - 1)(1/n_a + 1/n_b)."""
    a, b = np.asarray(n_a, dtype=float), np.asarray(n_b, dtype=float)
    with np.errstate(divide="ignore"):
        value = np.where((a > 0) & (b > 0), max(bins - 1, 0) * (1.0 / a + 1.0 / b), math.inf)
    return float(value) if value.ndim == 0 else value


def js_distance(a: Counts, b: Counts) -> Any:
    """Jensen-Shannon distance, base 2, in [0, 1] (finite with empty bins, no smoothing needed)."""
    x, y, single = _pair(a, b)
    n, m = x.sum(axis=1), y.sum(axis=1)
    if (n <= 0).any() or (m <= 0).any():
        raise ValueError("counts sum to zero")
    p, q = x / n[:, None], y / m[:, None]
    mid = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / mid), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log2(q / mid), 0.0).sum(axis=1)
    return _out(np.sqrt(np.clip((kl_p + kl_q) / 2, 0.0, 1.0)), single)


def fdr_adjust(p_values: Sequence[float] | np.ndarray, method: FdrMethod = "bh") -> np.ndarray:
    """Adjusted p-values (q-values): reject hypothesis i at level alpha iff q[i] <= alpha.
    "bh": Benjamini-Hochberg (independent or positively dependent tests); "by": Benjamini-Yekutieli,
    valid under any dependence at the price of a factor sum(1/i)."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return p.copy()
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p-values must lie in [0, 1]")
    factor = float(np.sum(1.0 / np.arange(1, m + 1))) if method == "by" else 1.0
    order = np.argsort(p)
    ranked = p[order] * m * factor / np.arange(1, m + 1)
    q_sorted = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    q = np.empty(m)
    q[order] = q_sorted
    return q


def fdr_reject(p_values: Sequence[float] | np.ndarray, alpha: float = 0.05, method: FdrMethod = "bh") -> list[bool]:
    return [bool(v) for v in fdr_adjust(p_values, method) <= alpha]
