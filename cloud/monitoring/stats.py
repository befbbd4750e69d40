"""Two-sample statistics on binned counts (pure: numpy, plus scipy.special for two distribution tails).

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
from typing import Literal

import numpy as np
from scipy.special import chdtrc, kolmogorov

Counts = Sequence[float] | np.ndarray
FdrMethod = Literal["bh", "by"]

MIN_EXPECTED = 5.0  # Cochran's rule of thumb for the chi-square approximation
SMOOTHING = 0.5  # Jeffreys: half a count added to every bin for the effect sizes


def _pair(a: Counts, b: Counts) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError("counts must be 1-d sequences")
    if x.shape != y.shape:
        raise ValueError(f"bin count mismatch: {len(x)} and {len(y)} bins")
    if (x < 0).any() or (y < 0).any() or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("counts must be finite and non-negative")
    return x, y


@dataclass(frozen=True)
class TestResult:
    statistic: float
    dof: int  # 0: nothing to test (one bin left after merging, or an empty sample)
    p_value: float


def merge_sparse_bins(a: Counts, b: Counts, min_expected: float = MIN_EXPECTED) -> tuple[np.ndarray, np.ndarray]:
    """Merge adjacent bins (left to right, the last remainder into its left neighbour) until each bin's
    pooled count, scaled to the smaller sample, reaches `min_expected`. Bins are ordered, so neighbours
    are the natural partners."""
    x, y = _pair(a, b)
    pooled, small = x + y, min(x.sum(), y.sum())
    total = pooled.sum()
    if total <= 0 or small <= 0:
        return x, y
    need = min_expected * total / small  # pooled rows a bin needs
    groups: list[list[int]] = []
    acc, current = 0.0, []
    for i, value in enumerate(pooled):
        current.append(i)
        acc += value
        if acc >= need:
            groups.append(current)
            acc, current = 0.0, []
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return np.array([x[g].sum() for g in groups]), np.array([y[g].sum() for g in groups])


def _expected(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pooled = x + y
    share = pooled / pooled.sum()
    return share * x.sum(), share * y.sum()


def chi_square_two_sample(a: Counts, b: Counts, min_expected: float = MIN_EXPECTED) -> TestResult:
    """Pearson's chi-square test of homogeneity of two binned samples."""
    x, y = merge_sparse_bins(a, b, min_expected)
    if x.sum() <= 0 or y.sum() <= 0 or len(x) < 2:
        return TestResult(0.0, 0, 1.0)
    ex, ey = _expected(x, y)
    statistic = float(np.sum((x - ex) ** 2 / ex) + np.sum((y - ey) ** 2 / ey))
    dof = len(x) - 1
    return TestResult(statistic, dof, float(chdtrc(dof, statistic)))


def g_test(a: Counts, b: Counts, min_expected: float = MIN_EXPECTED) -> TestResult:
    """The likelihood-ratio (G) test of homogeneity; same null distribution as the chi-square."""
    x, y = merge_sparse_bins(a, b, min_expected)
    if x.sum() <= 0 or y.sum() <= 0 or len(x) < 2:
        return TestResult(0.0, 0, 1.0)
    ex, ey = _expected(x, y)

    def term(observed: np.ndarray, expected: np.ndarray) -> float:
        mask = observed > 0
        return float(np.sum(observed[mask] * np.log(observed[mask] / expected[mask])))

    statistic = max(0.0, 2.0 * (term(x, ex) + term(y, ey)))
    dof = len(x) - 1
    return TestResult(statistic, dof, float(chdtrc(dof, statistic)))


@dataclass(frozen=True)
class KsResult:
    statistic: float  # max |F_a - F_b| over the bin edges: <= the continuous statistic
    upper: float  # the continuous statistic is at most this (statistic + the largest bin mass)
    p_value: float  # from `statistic`: conservative for the continuous test


def _ks_tail(d: float, n: float, m: float) -> float:
    """P(D >= d) for two samples of n and m, asymptotic with Stephens' small-sample correction."""
    if d <= 0:
        return 1.0
    en = math.sqrt(n * m / (n + m))
    return float(min(1.0, kolmogorov((en + 0.12 + 0.11 / en) * d)))


def binned_ks(a: Counts, b: Counts) -> KsResult:
    x, y = _pair(a, b)
    n, m = x.sum(), y.sum()
    if n <= 0 or m <= 0:
        return KsResult(0.0, 1.0, 1.0)
    p, q = x / n, y / m
    d = float(np.max(np.abs(np.cumsum(p) - np.cumsum(q))))
    # inside a bin both CDFs rise by at most that bin's mass, so the unseen gap is bounded by it
    upper = min(1.0, d + float(np.max(np.maximum(p, q))))
    return KsResult(d, upper, _ks_tail(d, n, m))


def smoothed(counts: Counts, smoothing: float = SMOOTHING) -> np.ndarray:
    arr = np.asarray(counts, dtype=float)
    return (arr + smoothing) / (arr.sum() + smoothing * len(arr))


def psi(a: Counts, b: Counts, smoothing: float = SMOOTHING) -> float:
    """Population Stability Index of b against a, on smoothed proportions."""
    x, y = _pair(a, b)
    if x.sum() <= 0 or y.sum() <= 0:
        raise ValueError("counts sum to zero")
    p, q = smoothed(x, smoothing), smoothed(y, smoothing)
    return float(np.sum((q - p) * np.log(q / p)))


def psi_expected_null(bins: int, n_a: float, n_b: float) -> float:
    """PSI expected between two samples of sizes n_a and n_b from one distribution over `bins` bins:
    PSI is close to the chi-square statistic over the harmonic sample size, (bins - 1)(1/n_a + 1/n_b)."""
    if n_a <= 0 or n_b <= 0:
        return math.inf
    return max(bins - 1, 0) * (1.0 / n_a + 1.0 / n_b)


def js_distance(a: Counts, b: Counts) -> float:
    """Jensen-Shannon distance, base 2, in [0, 1] (finite with empty bins, no smoothing needed)."""
    x, y = _pair(a, b)
    if x.sum() <= 0 or y.sum() <= 0:
        raise ValueError("counts sum to zero")
    p, q = x / x.sum(), y / y.sum()
    mid = (p + q) / 2

    def kl(v: np.ndarray) -> float:
        mask = v > 0
        return float(np.sum(v[mask] * np.log2(v[mask] / mid[mask])))

    return math.sqrt(min(max(0.0, (kl(p) + kl(q)) / 2), 1.0))


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
