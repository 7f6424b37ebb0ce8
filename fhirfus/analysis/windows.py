"""Visit windows of the analysis plan: which assessment stands for a patient at 3, 6, 12 months.

In a window [from_day; to_day] (days after the first session) a patient's value of an outcome is
that of the assessment nearest to the nominal day among those having the outcome; at equal
distance the earlier one. Patients whose day zero is not a session have no windows.

Per window, outcome and group: n and median [Q1; Q3] of the window values, and over the patients
with a baseline too the change (value − baseline): mean with its t interval, Hodges–Lehmann median
with its interval (``inference``), paired t and Wilcoxon signed-rank.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fhirfus.analysis.deid.rows import DAY_ZERO_SESSION
from fhirfus.analysis.inference import hodges_lehmann, mean_interval, paired_tests
from fhirfus.analysis.plan import Plan
from fhirfus.analysis.stats import quartiles


def window_values(patients: pd.DataFrame, assessments: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """One row per patient (index: pseudonym): ``{window}_{outcome}`` and ``{window}_{outcome}_day``."""
    index = pd.Index(patients["pseudonym"], name="pseudonym")
    out = pd.DataFrame(index=index)
    treated = set(patients.loc[patients["day_zero"] == DAY_ZERO_SESSION, "pseudonym"])
    data = assessments[assessments["pseudonym"].isin(treated)].dropna(subset=["day"])
    data = data.astype({"day": "int64"})
    for window in plan.windows:
        inside = data[(data["day"] >= window.from_day) & (data["day"] <= window.to_day)].copy()
        inside["distance"] = (inside["day"] - window.nominal_day).abs()
        inside = inside.sort_values(["pseudonym", "distance", "day"], kind="stable")
        for outcome in plan.outcomes:
            chosen = inside.dropna(subset=[outcome]).drop_duplicates("pseudonym").set_index("pseudonym")
            out[f"{window.name}_{outcome}"] = chosen[outcome].astype("float64").reindex(index)
            out[f"{window.name}_{outcome}_day"] = chosen["day"].reindex(index).astype("Int64")
    return out


def window_cell(values: pd.Series, baseline: pd.Series, plan: Plan) -> dict[str, Any]:
    """The figures of one window, outcome and group."""
    present = values.dropna()
    pairs = pd.DataFrame({"value": values, "baseline": baseline}).dropna()
    value, base = pairs["value"].to_numpy(dtype=float), pairs["baseline"].to_numpy(dtype=float)
    d = value - base
    return {
        "n": len(present),
        "value": quartiles(present.to_numpy(dtype=float)),
        "change": {
            "n": len(d),
            "mean": mean_interval(d, plan.confidence),
            "hodges_lehmann": hodges_lehmann(d, plan.confidence, plan.hodges_lehmann_exact_max_n),
            **paired_tests(value, base),
        },
    }


def group_windows(patients: pd.DataFrame, windowed: pd.DataFrame, plan: Plan) -> dict[str, Any]:
    frame = windowed.reindex(patients["pseudonym"])
    out: dict[str, Any] = {}
    for window in plan.windows:
        out[window.name] = {
            outcome: window_cell(frame[f"{window.name}_{outcome}"].reset_index(drop=True),
                                 patients[f"{outcome}_baseline"].reset_index(drop=True), plan)
            for outcome in plan.outcomes
        }
    return out


def grouped(patients: pd.DataFrame, column: str) -> dict[str, pd.DataFrame]:
    """Patients by the released values of ``column`` (none for an unreleased or suppressed column)."""
    if column not in patients:
        return {}
    values = patients[column].dropna()
    return {str(v): patients[patients[column] == v] for v in sorted(values.unique()) if v != "*"}


def window_statistics(patients: pd.DataFrame, windowed: pd.DataFrame, plan: Plan) -> dict[str, Any]:
    """statistics.json ``windows``: overall, ``by_target`` and ``by_site`` (when released)."""
    out: dict[str, Any] = {"overall": group_windows(patients, windowed, plan)}
    out["by_target"] = {t: group_windows(g, windowed, plan) for t, g in grouped(patients, "target").items()}
    out["by_site"] = {s: group_windows(g, windowed, plan) for s, g in grouped(patients, "site").items()}
    return out
