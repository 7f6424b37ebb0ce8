"""Interval estimates and group comparisons the analysis plan names, on plain arrays.

Definitions, so that a reader can recompute every figure:
- mean change: mean of the paired differences d with the t interval mean ± t(1−α/2, n−1)·SD/√n;
- Hodges–Lehmann median change: the median of the n(n+1)/2 Walsh averages (dᵢ + dⱼ)/2, i ≤ j,
  of all n differences (zeros included). Its interval is [W₍ₖ₎; W₍M+1−ₖ₎] over the sorted Walsh
  averages (M of them), where, for n up to the plan's exact limit, k − 1 is the largest c with
  P(T⁺ ≤ c) ≤ α/2 under the exact null distribution of the signed-rank statistic T⁺, and above
  it k = ⌊M/2 − z(1−α/2)·√(n(n+1)(2n+1)/24)⌋ (normal approximation); no interval when k < 1;
- Kruskal–Wallis and Mann–Whitney U: scipy's defaults (two-sided, tie-corrected, asymptotic or
  exact as scipy chooses); Holm's step-down adjustment of the pairwise p values.
Undefined values are ``None``, never NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import cache
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

#: Above this n the Walsh averages are not materialised (n² memory) but selected by bisection.
DIRECT_WALSH_MAX_N = 100


def number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def mean_interval(d: np.ndarray, confidence: float) -> dict[str, Any]:
    """Mean of ``d`` with its t interval."""
    n = len(d)
    if n == 0:
        return {"n": 0, "mean": None, "ci_low": None, "ci_high": None}
    mean = float(np.mean(d))
    if n < 2:
        return {"n": n, "mean": mean, "ci_low": None, "ci_high": None}
    half = scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * float(np.std(d, ddof=1)) / math.sqrt(n)
    return {"n": n, "mean": mean, "ci_low": number(mean - half), "ci_high": number(mean + half)}


@cache
def signed_rank_cdf(n: int) -> tuple[float, ...]:
    """P(T⁺ ≤ c) for c = 0 … n(n+1)/2 under the null (every sign equally likely)."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):
        shifted = np.zeros_like(counts)
        shifted[rank:] = counts[:-rank]
        counts = counts + shifted
    return tuple(np.cumsum(counts) / 2.0 ** n)


def _walsh_k(n: int, confidence: float, exact_max_n: int) -> tuple[int, str]:
    m = n * (n + 1) // 2
    alpha = 1 - confidence
    if n <= exact_max_n:
        cdf = signed_rank_cdf(n)
        below = [c for c in range(m + 1) if cdf[c] <= alpha / 2]
        return (below[-1] + 1 if below else 0), "exact"
    z = scipy_stats.norm.ppf(1 - alpha / 2)
    return math.floor(m / 2 - z * math.sqrt(n * (n + 1) * (2 * n + 1) / 24)), "normal"


def _ranges(d: np.ndarray, above: float, upto: float) -> tuple[np.ndarray, np.ndarray]:
    """Per i, the j range (i ≤ j) of the Walsh sums dᵢ + dⱼ in (above; upto], for sorted ``d``."""
    i = np.arange(len(d))
    first = np.maximum(np.searchsorted(d, above - d, side="right"), i)
    stop = np.maximum(np.searchsorted(d, upto - d, side="right"), i)
    return first, stop


def walsh_order_statistic(d: np.ndarray, k: int, gather: int = 4) -> float:
    """The k-th smallest (1-based) Walsh average of sorted ``d``, without building all n²/2 of them.

    Bisection on the value narrows (lo; hi] around it, counting the sums below a value with one
    ``searchsorted``; it stops when the interval holds one distinct sum (tied data) or few enough
    sums (``gather`` × n) to select the answer among them directly."""
    n = len(d)
    lo, hi, below = 2 * float(d[0]) - 1.0, 2 * float(d[-1]), 0   # count(≤ lo) = below < k ≤ count(≤ hi)
    while True:
        first, stop = _ranges(d, lo, hi)
        lengths = stop - first
        inside = int(lengths.sum())
        rows = np.flatnonzero(lengths)
        smallest = float((d[rows] + d[first[rows]]).min())
        largest = float((d[rows] + d[stop[rows] - 1]).max())
        mid = (lo + hi) / 2
        if smallest == largest:
            return smallest / 2
        if inside <= gather * n or mid in (lo, hi):
            counts = lengths[rows]
            offsets = np.arange(inside) - np.repeat(np.cumsum(counts) - counts, counts)
            sums = d[np.repeat(rows, counts)] + d[np.repeat(first[rows], counts) + offsets]
            return float(np.partition(sums, k - below - 1)[k - below - 1]) / 2
        first_mid, stop_mid = _ranges(d, lo, mid)
        at_mid = below + int((stop_mid - first_mid).sum())
        if at_mid >= k:
            hi = mid
        else:
            lo, below = mid, at_mid


def _walsh(d: np.ndarray, ks: Sequence[int]) -> list[float]:
    if len(d) <= DIRECT_WALSH_MAX_N:
        rows, cols = np.triu_indices(len(d))
        walsh = np.sort((d[rows] + d[cols]) / 2)
        return [float(walsh[k - 1]) for k in ks]
    found = {k: walsh_order_statistic(d, k) for k in sorted(set(ks))}
    return [found[k] for k in ks]


def hodges_lehmann(d: np.ndarray, confidence: float, exact_max_n: int) -> dict[str, Any]:
    """Hodges–Lehmann estimate of the median difference with its distribution-free interval."""
    n = len(d)
    if n == 0:
        return {"n": 0, "estimate": None, "ci_low": None, "ci_high": None, "method": None}
    d = np.sort(np.asarray(d, dtype=float))
    m = n * (n + 1) // 2
    k, method = _walsh_k(n, confidence, exact_max_n)
    middle = [(m + 1) // 2, m // 2 + 1]
    wanted = [*middle, *([k, m + 1 - k] if k >= 1 else [])]
    values = _walsh(d, wanted)
    estimate = (values[0] + values[1]) / 2
    low, high = (values[2], values[3]) if k >= 1 else (None, None)
    return {"n": n, "estimate": estimate, "ci_low": low, "ci_high": high, "method": method}


def _pvalue(fn: Any, *samples: np.ndarray) -> dict[str, float | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = fn(*samples)
        except ValueError:  # e.g. all values identical
            return {"statistic": None, "p": None}
    return {"statistic": number(result.statistic), "p": number(result.pvalue)}


def paired_tests(value: np.ndarray, baseline: np.ndarray) -> dict[str, Any]:
    """Paired t (``ttest_rel(value, baseline)``) and Wilcoxon signed-rank of the differences."""
    if len(value) < 2:
        empty = {"statistic": None, "p": None}
        return {"paired_t": empty, "wilcoxon": dict(empty)}
    d = value - baseline
    wilcoxon = {"statistic": None, "p": None} if not np.any(d) else _pvalue(scipy_stats.wilcoxon, d)
    return {"paired_t": _pvalue(scipy_stats.ttest_rel, value, baseline), "wilcoxon": wilcoxon}


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p values (``None`` stays ``None`` and is not counted)."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[i] = running
    return adjusted


def compare_groups(groups: dict[str, np.ndarray]) -> dict[str, Any]:
    """Kruskal–Wallis over the groups with ≥ 1 value, then every pair by Mann–Whitney with Holm."""
    present = {name: values for name, values in groups.items() if len(values)}
    omnibus = _pvalue(scipy_stats.kruskal, *present.values()) if len(present) >= 2 else {"statistic": None, "p": None}
    pairs: list[dict[str, Any]] = []
    for a, b in combinations(sorted(present), 2):
        pairs.append({"a": a, "b": b, **_pvalue(scipy_stats.mannwhitneyu, present[a], present[b])})
    for pair, adjusted in zip(pairs, holm([p["p"] for p in pairs]), strict=True):
        pair["p_holm"] = adjusted
    return {"kruskal_wallis": omnibus, "pairwise_mann_whitney": pairs}
