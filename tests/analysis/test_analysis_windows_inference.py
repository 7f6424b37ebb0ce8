"""Window assignment and the interval estimates, on small hand-made data with known answers."""

from __future__ import annotations

from itertools import product

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fhirfus.analysis.inference import (
    DIRECT_WALSH_MAX_N,
    hodges_lehmann,
    holm,
    mean_interval,
    walsh_order_statistic,
)
from fhirfus.analysis.plan import load_plan
from fhirfus.analysis.windows import window_values

NAN = float("nan")


def _assessments(rows: list[tuple[str, int, float, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["pseudonym", "day", "total", "pain"])
    frame["severity"] = frame["disability"] = NAN
    frame["phase"] = np.where(frame["day"] <= 0, "before", "after")
    return frame


def test_the_assessment_nearest_the_nominal_day_is_taken_and_a_tie_goes_to_the_earlier() -> None:
    patients = pd.DataFrame({"pseudonym": ["A", "B", "C"], "day_zero": ["first-session"] * 2 + ["first-assessment"]})
    assessments = _assessments([
        ("A", -3, 40, 10), ("A", 61, 35, 9), ("A", 100, 30, 8),   # m3: 100 is nearer 90 than 61
        ("A", 170, 22, 7), ("A", 190, 20, 6),                        # m6: 170 and 190 tie → 170
        ("A", 421, 5, 1),                                             # outside m12 (300–420)
        ("B", 0, 50, 12), ("B", 80, 44, NAN), ("B", 110, 41, 11),    # pain: nearest *having* pain → 110
        ("C", 90, 10, 1),                                             # day 0 is no session: no windows
    ])
    got = window_values(patients, assessments, load_plan())
    assert got.loc["A", "m3_total"] == 30 and got.loc["A", "m3_total_day"] == 100
    assert got.loc["A", "m6_total"] == 22 and got.loc["A", "m6_total_day"] == 170
    assert pd.isna(got.loc["A", "m12_total"])
    assert got.loc["B", "m3_total"] == 44 and got.loc["B", "m3_pain"] == 11
    assert got.loc["C"].drop([c for c in got.columns if c.endswith("_day")]).isna().all()


def _walsh(d: np.ndarray) -> np.ndarray:
    return np.sort([(d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d))])


def test_hodges_lehmann_exact_interval_matches_the_enumerated_signed_rank_distribution() -> None:
    d = np.array([-7.5, -3.0, -12.25, 1.0, -4.0, -9.0, -0.5, -6.0, -2.0, -11.0])
    n = len(d)
    sums = np.array([sum(r for r, s in zip(range(1, n + 1), signs, strict=True) if s)
                     for signs in product((0, 1), repeat=n)])
    k = 0
    while np.mean(sums <= k) <= 0.025:   # k − 1 = largest c with P(T⁺ ≤ c) ≤ α/2
        k += 1
    walsh = _walsh(d)
    got = hodges_lehmann(d, 0.95, exact_max_n=50)
    assert got["method"] == "exact" and k == 9  # tabulated: n = 10, two-sided 5 %: critical value 8
    assert got["estimate"] == pytest.approx(np.median(walsh), abs=1e-12)
    assert (got["ci_low"], got["ci_high"]) == (walsh[k - 1], walsh[len(walsh) - k])


def test_hodges_lehmann_has_no_exact_interval_below_six_pairs() -> None:
    got = hodges_lehmann(np.array([-1.0, -2.0, -3.0, -4.0, -5.0]), 0.95, exact_max_n=50)
    assert got["estimate"] == -3.0 and got["ci_low"] is None and got["ci_high"] is None


def test_hodges_lehmann_normal_interval_for_large_n_without_building_every_walsh_average() -> None:
    rng = np.random.default_rng(3)
    d = np.round(rng.normal(-10, 8, DIRECT_WALSH_MAX_N + 900) * 4) / 4   # quarter points, many ties
    walsh = _walsh(d)
    m, n = len(walsh), len(d)
    k = int(np.floor(m / 2 - stats.norm.ppf(0.975) * np.sqrt(n * (n + 1) * (2 * n + 1) / 24)))
    got = hodges_lehmann(d, 0.95, exact_max_n=50)
    assert got["method"] == "normal"
    assert got["estimate"] == pytest.approx(np.median(walsh), abs=1e-12)
    assert (got["ci_low"], got["ci_high"]) == (walsh[k - 1], walsh[m - k])
    sorted_d = np.sort(d)
    for rank in (1, 2, m // 3, m - 1, m):
        assert walsh_order_statistic(sorted_d, rank) == walsh[rank - 1]


@pytest.mark.parametrize("gather", [0, 4])
def test_the_walsh_selection_agrees_with_sorting_on_continuous_and_tied_data(gather: int) -> None:
    rng = np.random.default_rng(11)
    for d in (np.sort(rng.normal(0, 5, 400)), np.sort(rng.integers(-3, 3, 400).astype(float)),
              np.sort(rng.exponential(2.0, 401))):
        walsh = _walsh(d)
        for rank in (1, 7, len(walsh) // 2, len(walsh) // 2 + 1, len(walsh) - 3, len(walsh)):
            assert walsh_order_statistic(d, rank, gather) == walsh[rank - 1]


def test_mean_interval_is_the_t_interval() -> None:
    d = np.array([-3.0, -1.5, -8.0, 2.0, -4.25])
    low, high = stats.t.interval(0.95, 4, loc=d.mean(), scale=stats.sem(d))
    got = mean_interval(d, 0.95)
    assert got["ci_low"] == pytest.approx(low, abs=1e-12) and got["ci_high"] == pytest.approx(high, abs=1e-12)
    assert mean_interval(np.array([1.0]), 0.95)["ci_low"] is None


def test_holm_adjustment_matches_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests
    raw = [0.01, 0.04, 0.03, 0.2]
    assert holm(raw) == pytest.approx(list(multipletests(raw, method="holm")[1]), abs=1e-12)
    assert holm([0.02, None]) == [0.02, None]
