"""Writing the analysis files: tables (CSV or Parquet), the data dictionary and statistics.json.

The dictionary documents every released column (type, unit, allowed values, meaning, and the
FHIRPath it comes from, through which view) and, as ``export`` rows, the de-identification policy
with the sha256 of its file and the k-anonymity report, so a dataset always says how it was made.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fhirfus.analysis.dataset import SCORES
from fhirfus.analysis.deid.policy import Policy
from fhirfus.analysis.views import AnalysisView

FORMATS = ("csv", "parquet")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet",
    "json": "application/json", "html": "text/html; charset=utf-8",
}
DICTIONARY_COLUMNS = ["file", "column", "type", "unit", "allowed_values", "description", "source", "value"]

_SCORE_NOTE = {"total": "0–85", "severity": "0–35", "disability": "0–30", "pain": "0–20"}


def _column_specs(views: Mapping[str, AnalysisView], policy: Policy) -> dict[str, dict[str, tuple]]:
    """file → column → (type, unit, allowed values, description, source)."""
    def src(view: str, column: str, how: str = "") -> str:
        expression = views[view].sources.get(column, "") if view in views else ""
        return f"{views[view].file if view in views else view}: {expression}" + (f" ({how})" if how else "")

    def codes(view: str, column: str, joined: bool) -> str:
        allowed = next((c.allowed for c in views[view].columns if c.name == column), None) if view in views else None
        text = " ".join(sorted(allowed or []))
        return f"{text}; several joined by '+' in alphabetical order" if joined and text else text

    band = policy.band_years
    bands = [f"{lo}-{min(lo + band - 1, policy.top_code - 1)}" if band > 1 else str(lo)
             for lo in range(0, policy.top_code, band)] + [f"{policy.top_code}+"]
    day_note = "whole days since the patient's day zero (negative: before it)"
    patients: dict[str, tuple] = {
        "pseudonym": ("string", "", "", "Random pseudonym: the same patient gets the same one under the same "
                      "FHIRFUS_DEID_KEY, unrelated ones under another key", src("analysis_patient", "patient_key", "pseudonym rule")),
        "site": ("string", "", "study site codes", "Study site", src("analysis_patient", "site")),
        "sex": ("string", "", codes("analysis_patient", "gender", False), "Administrative gender", src("analysis_patient", "gender")),
        "age_band": ("string", "years", " ".join(bands), f"Age in whole years at day zero, {band}-year bands, "
                     f"{policy.top_code}+ above", src("analysis_patient", "birth_date", "age-band rule")),
        "cd_subtype": ("string", "", codes("analysis_condition", "subtype", True), "Cervical-dystonia subtype(s)",
                       src("analysis_condition", "subtype")),
        "state": ("string", "", "", "State of the first address", src("analysis_patient", "state")),
        "zip3": ("string", "", "3 digits; 000 for the restricted ZIP3 prefixes", "First three digits of a US ZIP code",
                 src("analysis_patient", "postal_code", "zip3 rule")),
        "target": ("string", "", codes("analysis_procedure", "target", True), "Lesion target(s) over all sessions",
                   src("analysis_procedure", "target")),
        "sessions": ("integer", "count", "", "MRgFUS sessions (completed or in progress)", src("analysis_procedure", "procedure_key", "distinct count")),
        "day_zero": ("string", "", "first-session first-assessment", "The event all days count from: the first "
                     "MRgFUS session, else the first TWSTRS assessment", src("analysis_procedure", "performed", "minimum")),
        "baseline_day": ("integer", "days", "≤ 0", f"Day of the baseline total score; {day_note}", src("analysis_twstrs_score", "effective")),
        "last_day": ("integer", "days", "> 0", f"Day of the last total score; {day_note}", src("analysis_twstrs_score", "effective")),
        "follow_up_days": ("integer", "days", "> 0", "Days from the first session to the last TWSTRS assessment "
                           "(months = days / 30.4375)", src("analysis_twstrs_score", "effective", "maximum after day zero")),
        "adverse_events": ("integer", "count", "", "Adverse events that happened (actuality actual)",
                           src("analysis_adverse_event", "patient_key", "count")),
        "included": ("boolean", "", "true false", "Has a session, a baseline and a last total score (in the statistics)", ""),
        "exclusion_reason": ("string", "", "no-session no-baseline-assessment no-follow-up-assessment",
                             "Why the patient is not in the paired statistics", ""),
    }
    for score in SCORES:
        source = src("analysis_twstrs_score", "value", f"score = '{score}'")
        patients[f"{score}_baseline"] = ("decimal", "score points", _SCORE_NOTE[score], f"TWSTRS {score}: last value on or "
                                         "before the first session", source)
        patients[f"{score}_last"] = ("decimal", "score points", _SCORE_NOTE[score], f"TWSTRS {score}: latest value after "
                                     "the first session", source)
        patients[f"{score}_improvement_percent"] = ("decimal", "percent", "", f"100 × (baseline − last) / baseline of the "
                                                    f"TWSTRS {score} (empty when the baseline is 0)", source)
    assessments: dict[str, tuple] = {
        "pseudonym": patients["pseudonym"],
        "day": ("integer", "days", "", f"Day of the assessment; {day_note}", src("analysis_twstrs_score", "effective", "day-offset rule")),
        "phase": ("string", "", "before after", "Before (on or before) or after the first session; empty without a session", ""),
    }
    for score in SCORES:
        assessments[score] = ("decimal", "score points", _SCORE_NOTE[score], f"TWSTRS {score} score of the assessment "
                              "(empty when the subscale is incomplete)", src("analysis_twstrs_score", "value", f"score = '{score}'"))
    return {"patients": patients, "assessments": assessments}


def dictionary(tables: Mapping[str, pd.DataFrame], views: Sequence[AnalysisView], policy: Policy,
               deidentification: Mapping[str, Any], fmt: str, plan: Mapping[str, Any] | None = None) -> pd.DataFrame:
    specs = _column_specs({v.name: v for v in views}, policy)
    rows = []
    for name, table in tables.items():
        for column in table.columns:
            kind, unit, allowed, description, source = specs[name][column]
            rows.append([f"{name}.{fmt}", column, kind, unit, allowed, description, source, ""])
    k = deidentification["k_anonymity"]
    export = [
        ("policy", "De-identification policy applied", policy.source, policy.name),
        ("policy_sha256", "sha256 of the policy file's bytes", policy.source, policy.sha256),
        ("quasi_identifiers", "Columns the equivalence classes are formed over", "", " ".join(k["quasi_identifiers"])),
        ("k_anonymity", "Smallest equivalence class over the quasi-identifiers, as released", "", str(k["k"])),
        ("k_anonymity_before_suppression", "Smallest equivalence class before suppression", "", str(k["k_before_suppression"])),
        ("min_k", "Policy minimum k (values suppressed as '*' below it)", "", str(k["min_k"])),
        ("suppressed_cells", "Quasi-identifier values suppressed, per column", "",
         json.dumps(k["suppressed_cells"], sort_keys=True)),
        ("blanked_values", "Values outside their closed vocabulary, blanked, per view column", "",
         json.dumps(deidentification["blanked_values"], sort_keys=True)),
    ]
    if plan is not None:
        export += [("analysis_plan", "Analysis plan the statistics follow", plan["source"], plan["name"]),
                   ("analysis_plan_sha256", "sha256 of the plan file's bytes", plan["source"], plan["sha256"])]
    rows += [["export", column, "string", "", "", description, source, value] for column, description, source, value in export]
    return pd.DataFrame(rows, columns=DICTIONARY_COLUMNS)


def write_table(frame: pd.DataFrame, path: Path, fmt: str) -> Path:
    if fmt == "parquet":
        frame.to_parquet(path, index=False, engine="pyarrow")
    else:
        frame.to_csv(path, index=False, lineterminator="\n")
    return path


def write_json(data: Any, path: Path) -> Path:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    return path
