"""The paper's tables beyond the outcome summary: Table 1, adverse events, treatment parameters,
targets compared, site heterogeneity and completeness, from the de-identified dataset only.

Definitions, so that a reader can recompute every figure:
- counts are ``{"n", "percent"}`` with percent of the group's patients; a missing value is counted
  as ``not-recorded`` and a k-anonymity-suppressed one as ``suppressed``;
- continuous rows are median [Q1; Q3] (linear interpolation), min and max;
- Table 1: age band, sex and CD subtype of every patient; baseline scores of the patients having
  one; sessions of the treated; follow-up months (days / 30.4375) of the treated with a follow-up;
- adverse events: per term, the patients with ≥ 1 event, the events, the events by severity and
  those resolved (outcome ``resolved`` or ``resolvedWithSequelae``);
- treatment parameters: per session, grouped by the session's target(s);
- targets compared and sites: improvement % of the primary outcome (baseline → last follow-up)
  of the included patients; per site its mean with the t interval;
- completeness: registered → treated → with baseline → with the primary outcome in each window;
  complete case = patients with the primary outcome in every window, all available = each
  window's own paired set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fhirfus.analysis.dataset import PARAMETERS
from fhirfus.analysis.deid.policy import SUPPRESSED
from fhirfus.analysis.deid.rows import DAY_ZERO_SESSION
from fhirfus.analysis.inference import compare_groups, hodges_lehmann, mean_interval, number
from fhirfus.analysis.plan import Plan
from fhirfus.analysis.stats import DAYS_PER_MONTH
from fhirfus.analysis.windows import grouped

NOT_RECORDED = "not-recorded"
SEVERITIES = ("mild", "moderate", "severe", NOT_RECORDED)
RESOLVED = ("resolved", "resolvedWithSequelae")


def count(n: int, total: int) -> dict[str, Any]:
    return {"n": int(n), "percent": number(100.0 * n / total) if total else None}


def distribution(values: np.ndarray) -> dict[str, Any]:
    """n, median [Q1; Q3], min, max."""
    if len(values) == 0:
        return {"n": 0, "median": None, "q1": None, "q3": None, "min": None, "max": None}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"n": len(values), "median": number(median), "q1": number(q1), "q3": number(q3),
            "min": number(np.min(values)), "max": number(np.max(values))}


def _counts(series: pd.Series, total: int) -> dict[str, Any]:
    labels = series.astype("object").where(series.notna(), NOT_RECORDED)
    labels = labels.where(labels != SUPPRESSED, "suppressed")
    return {str(k): count(v, total) for k, v in sorted(labels.value_counts().items())}


def _values(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame[column].dropna().to_numpy(dtype=float) if column in frame else np.array([])


def table_one_group(patients: pd.DataFrame, plan: Plan) -> dict[str, Any]:
    total = len(patients)
    treated = patients[patients["day_zero"] == DAY_ZERO_SESSION]
    return {
        "patients": {"n": total},
        **{column: _counts(patients[column], total) for column in ("age_band", "sex", "cd_subtype")
           if column in patients},
        "baseline": {o: distribution(_values(patients, f"{o}_baseline")) for o in plan.outcomes},
        "sessions": distribution(treated.loc[treated["sessions"] > 0, "sessions"].to_numpy(dtype=float)),
        "follow_up_months": distribution(_values(treated, "follow_up_days") / DAYS_PER_MONTH),
    }


def by_groups(patients: pd.DataFrame, build: Any) -> dict[str, Any]:
    """``build`` for the cohort, per target and per released site."""
    return {"overall": build(patients),
            "by_target": {t: build(g) for t, g in grouped(patients, "target").items()},
            "by_site": {s: build(g) for s, g in grouped(patients, "site").items()}}


def table_one(patients: pd.DataFrame, plan: Plan) -> dict[str, Any]:
    return by_groups(patients, lambda group: table_one_group(group, plan))


def adverse_event_group(patients: pd.DataFrame, events: pd.DataFrame) -> dict[str, Any]:
    total = len(patients)
    events = events[events["pseudonym"].isin(set(patients["pseudonym"]))]
    severity = events["severity"].astype("object").where(events["severity"].notna(), NOT_RECORDED)
    events = events.assign(severity=severity, resolved=events["outcome"].isin(RESOLVED), any="any")

    def rows(by: str) -> dict[str, dict[str, Any]]:
        grouped = events.groupby(by)
        having, size, resolved = grouped["pseudonym"].nunique(), grouped.size(), grouped["resolved"].sum()
        severities = pd.crosstab(events[by], events["severity"]) if len(events) else pd.DataFrame()
        return {str(term): {
            "patients": count(int(having[term]), total), "events": {"n": int(size[term])},
            "by_severity": {s: {"n": int(severities.at[term, s]) if s in severities else 0} for s in SEVERITIES},
            "resolved": {"n": int(resolved[term])},
        } for term in sorted(size.index)}
    empty = {"patients": count(0, total), "events": {"n": 0},
             "by_severity": {s: {"n": 0} for s in SEVERITIES}, "resolved": {"n": 0}}
    return {"patients": {"n": total}, "any": rows("any").get("any", empty), "by_term": rows("event")}


def adverse_events(patients: pd.DataFrame, events: pd.DataFrame) -> dict[str, Any]:
    return by_groups(patients, lambda group: adverse_event_group(group, events))


def treatment_parameters(sessions: pd.DataFrame) -> dict[str, Any]:
    """Per session target: the sessions and each parameter's distribution over them."""
    def block(frame: pd.DataFrame) -> dict[str, Any]:
        return {"sessions": {"n": len(frame)},
                **{column: distribution(_values(frame, column)) for column in PARAMETERS.values()}}
    targets = sorted(sessions["target"].dropna().unique()) if not sessions.empty else []
    return {"overall": block(sessions),
            "by_target": {str(t): block(sessions[sessions["target"] == t]) for t in targets}}


def _improvement(patients: pd.DataFrame, plan: Plan) -> pd.Series:
    included = patients[patients["included"]]
    return included[f"{plan.outcomes[0]}_improvement_percent"]


def targets_compared(patients: pd.DataFrame, plan: Plan) -> dict[str, Any]:
    groups = {t: _values(g[g["included"]], f"{plan.outcomes[0]}_improvement_percent")
              for t, g in grouped(patients, "target").items()}
    return {"outcome": f"{plan.outcomes[0]}_improvement_percent",
            "groups": {t: distribution(v) for t, v in groups.items()}, **compare_groups(groups)}


def site_heterogeneity(patients: pd.DataFrame, plan: Plan) -> dict[str, Any]:
    sites = {s: _values(g[g["included"]], f"{plan.outcomes[0]}_improvement_percent")
             for s, g in grouped(patients, "site").items()}
    overall = _improvement(patients, plan).dropna().to_numpy(dtype=float)
    comparison = compare_groups(sites)
    return {"outcome": f"{plan.outcomes[0]}_improvement_percent",
            "overall": mean_interval(overall, plan.confidence),
            "by_site": {s: mean_interval(v, plan.confidence) for s, v in sites.items()},
            "kruskal_wallis": comparison["kruskal_wallis"]}


def completeness(patients: pd.DataFrame, windowed: pd.DataFrame, plan: Plan) -> dict[str, Any]:
    primary = plan.outcomes[0]
    frame = windowed.reindex(patients["pseudonym"]).reset_index(drop=True)
    patients = patients.reset_index(drop=True)
    treated = patients["day_zero"] == DAY_ZERO_SESSION
    with_baseline = treated & patients[f"{primary}_baseline"].notna()
    in_window = {w.name: with_baseline & frame[f"{w.name}_{primary}"].notna() for w in plan.windows}
    complete = with_baseline.copy()
    for mask in in_window.values():
        complete &= mask
    flow = [{"step": "registered", "n": len(patients)}, {"step": "treated", "n": int(treated.sum())},
            {"step": "with-baseline", "n": int(with_baseline.sum())}]
    flow += [{"step": f"in-window-{name}", "n": int(mask.sum())} for name, mask in in_window.items()]
    baseline = patients[f"{primary}_baseline"]

    def change(mask: pd.Series, window: str) -> dict[str, Any]:
        d = (frame.loc[mask, f"{window}_{primary}"] - baseline[mask]).to_numpy(dtype=float)
        return {"n": len(d), "mean": mean_interval(d, plan.confidence),
                "hodges_lehmann": hodges_lehmann(d, plan.confidence, plan.hodges_lehmann_exact_max_n)}
    return {
        "outcome": primary, "flow": flow,
        "complete_case": {"n": int(complete.sum()), **{w.name: change(complete, w.name) for w in plan.windows}},
        "all_available": {w.name: change(in_window[w.name], w.name) for w in plan.windows},
    }
