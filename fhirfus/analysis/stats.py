"""Cohort statistics of domain.md §5, overall and per target, from the ``patients`` table.

Definitions, so that a reader can recompute every figure:
- a score's paired set: included patients with both its baseline and its last value;
  ``baseline``/``last`` summarise that set (n, median, Q1, Q3, mean, SD);
- quartiles: numpy's default linear interpolation; SD: sample SD (ddof = 1);
- improvement %: per patient 100 × (baseline − last) / baseline, over the paired set minus
  patients with a baseline of 0 (undefined), as median [Q1; Q3];
- paired-samples t-test ``scipy.stats.ttest_rel(baseline, last)`` and Wilcoxon signed-rank
  ``scipy.stats.wilcoxon(baseline, last)`` with scipy's defaults (two-sided, zero_method
  'wilcox', exact/approximate chosen by scipy), statistic and p;
- follow-up months: days from the first session to the last TWSTRS assessment / 30.4375, over
  the included patients;
- ``cohort.excluded``: patients without both a baseline and a last total score (or without a
  session), listed by reason; they stay in ``patients.csv``.
Undefined values (n < 2, all differences zero) are ``null``, never NaN.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from fhirfus.analysis.dataset import SCORES

DAYS_PER_MONTH = 30.4375


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def summary(values: np.ndarray) -> dict[str, Any]:
    """n, median, Q1, Q3, mean, SD of ``values`` (an empty set gives n = 0 and nulls)."""
    if len(values) == 0:
        return {"n": 0, "median": None, "q1": None, "q3": None, "mean": None, "sd": None}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {
        "n": len(values), "median": _number(median), "q1": _number(q1), "q3": _number(q3),
        "mean": _number(np.mean(values)), "sd": _number(np.std(values, ddof=1)) if len(values) > 1 else None,
    }


def quartiles(values: np.ndarray) -> dict[str, Any]:
    if len(values) == 0:
        return {"n": 0, "median": None, "q1": None, "q3": None}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"n": len(values), "median": _number(median), "q1": _number(q1), "q3": _number(q3)}


def _test(fn: Any, baseline: np.ndarray, last: np.ndarray) -> dict[str, float | None]:
    if len(baseline) < 2:
        return {"statistic": None, "p": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample and precision-loss notes: the nulls say it
        try:
            result = fn(baseline, last)
        except ValueError:  # e.g. Wilcoxon with every difference zero
            return {"statistic": None, "p": None}
    return {"statistic": _number(result.statistic), "p": _number(result.pvalue)}


def score_statistics(patients: pd.DataFrame, score: str) -> dict[str, Any]:
    included = patients[patients["included"]]
    paired = included.dropna(subset=[f"{score}_baseline", f"{score}_last"])
    baseline = paired[f"{score}_baseline"].to_numpy(dtype=float)
    last = paired[f"{score}_last"].to_numpy(dtype=float)
    improvement = paired[f"{score}_improvement_percent"].dropna().to_numpy(dtype=float)
    return {
        "baseline": summary(baseline),
        "last": summary(last),
        "improvement_percent": quartiles(improvement),
        "paired_t": _test(scipy_stats.ttest_rel, baseline, last),
        "wilcoxon": _test(scipy_stats.wilcoxon, baseline, last),
        "excluded": int(len(patients) - len(paired)),
    }


def group_statistics(patients: pd.DataFrame) -> dict[str, Any]:
    included = patients[patients["included"]]
    months = included["follow_up_days"].dropna().to_numpy(dtype=float) / DAYS_PER_MONTH
    reasons = patients["exclusion_reason"].dropna().value_counts().sort_index()
    sessions = patients.loc[patients["sessions"] > 0, "sessions"].to_numpy(dtype=float)
    return {
        "cohort": {
            "patients": len(patients), "excluded": int(len(patients) - len(included)),
            "excluded_by_reason": {str(k): int(v) for k, v in reasons.items()},
        },
        "follow_up_months": {
            "n": len(months), "mean": _number(np.mean(months)) if len(months) else None,
            "sd": _number(np.std(months, ddof=1)) if len(months) > 1 else None,
        },
        "sessions_per_patient": summary(sessions),
        "scores": {score: score_statistics(patients, score) for score in SCORES},
    }


def cohort_statistics(patients: pd.DataFrame) -> dict[str, Any]:
    """statistics.json: the cohort overall plus ``by_target`` (patients without a target excluded)."""
    overall = group_statistics(patients)
    by_target: dict[str, Any] = {}
    for target in sorted(patients["target"].dropna().unique()):
        group = group_statistics(patients[patients["target"] == target])
        by_target[str(target)] = {
            "patients": group["cohort"]["patients"], "excluded": group["cohort"]["excluded"],
            "follow_up_months": group["follow_up_months"], "sessions_per_patient": group["sessions_per_patient"],
            "scores": group["scores"],
        }
    return {**overall, "by_target": by_target}
