"""The two analysis tables, built from de-identified view rows only (domain.md §5).

``patients``: one row per patient. Baseline of a score = its last value on or before day 0 (the
first session); last = its latest value after day 0; improvement % = 100 × (baseline − last) /
baseline. Follow-up = days from the first session to the last TWSTRS assessment. A patient
without a session, a baseline or a follow-up total score is kept and marked ``included = false``
with the reason, never dropped.

``assessments``: one row per TWSTRS assessment (the scores derived from one response), long.
Rows are ordered by pseudonym (random), so row order reveals nothing about the source order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fhirfus.analysis.deid.rows import DAY_ZERO_SESSION, DeidentifiedRows

SCORES = ("total", "severity", "disability", "pain")
PATIENT_VIEW = "analysis_patient"
CONDITION_VIEW = "analysis_condition"
PROCEDURE_VIEW = "analysis_procedure"
ADVERSE_EVENT_VIEW = "analysis_adverse_event"
SCORE_VIEW = "analysis_twstrs_score"
PARAMETER_VIEW = "analysis_session_parameter"
#: Treatment parameter code (sonication-parameter CodeSystem) → sessions column.
PARAMETERS = {"sonication-count": "sonications", "power": "max_power_w", "energy": "max_energy_j",
              "peak-temperature": "max_temperature_c", "skull-density-ratio": "sdr"}
KEY = "patient_key"
#: View column → patients column, for the columns passed through as they are released.
PASSTHROUGH = {"site": "site", "gender": "sex", "birth_date": "age_band", "state": "state", "postal_code": "zip3"}


@dataclass
class Dataset:
    patients: pd.DataFrame
    assessments: pd.DataFrame
    #: One row per MRgFUS session: pseudonym, day, target, and the PARAMETERS columns (for the
    #: treatment table; not written as a file).
    sessions: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: One row per adverse event: pseudonym, event, severity, outcome (for the adverse-event table).
    adverse_events: pd.DataFrame = field(default_factory=pd.DataFrame)


def _sessions(procedures: pd.DataFrame, parameters: pd.DataFrame | None) -> pd.DataFrame:
    """Sessions with their (joined) targets and, where recorded, their treatment parameters."""
    columns = ["pseudonym", "day", "target", *PARAMETERS.values()]
    if procedures.empty:
        return pd.DataFrame(columns=columns)
    grouped = procedures.groupby("procedure_key", sort=False)
    sessions = pd.DataFrame({
        "pseudonym": grouped[KEY].first(), "day": grouped["performed"].min(),
        "target": grouped["target"].agg(lambda codes: "+".join(sorted(set(codes.dropna()))) or None),
    })
    if parameters is not None and not parameters.empty:
        values = parameters.dropna(subset=["procedure_key", "parameter", "value"]).astype({"value": "float64"})
        wide = values.pivot_table(index="procedure_key", columns="parameter", values="value", aggfunc="max")
        for code, column in PARAMETERS.items():
            if code in wide:
                sessions[column] = wide[code].reindex(sessions.index)
    for column in PARAMETERS.values():
        if column not in sessions:
            sessions[column] = np.nan
    return sessions.reset_index(drop=True)[columns]


def _adverse_events(events: pd.DataFrame) -> pd.DataFrame:
    columns = ["pseudonym", "event", "severity", "outcome"]
    frame = events.rename(columns={KEY: "pseudonym"})
    for column in columns:
        if column not in frame:
            frame[column] = None
    return frame[columns].reset_index(drop=True)


def _joined(frame: pd.DataFrame, column: str) -> pd.Series:
    """Per patient: the distinct non-null codes, sorted and joined with '+' (e.g. two targets)."""
    if frame.empty or column not in frame:
        return pd.Series(dtype="object")
    values = frame.dropna(subset=[column]).groupby(KEY)[column]
    return values.agg(lambda codes: "+".join(sorted(set(codes))))


def _assessments(scores: pd.DataFrame) -> pd.DataFrame:
    """Scores pivoted to one row per assessment (the response they were derived from)."""
    columns = [KEY, "assessment", "day", *SCORES]
    if scores.empty:
        return pd.DataFrame(columns=columns)
    scores = scores.copy()
    fallback = "day:" + scores["effective"].astype("string").fillna("?")
    scores["assessment"] = scores["response_key"].astype("string").fillna(fallback) if "response_key" in scores \
        else fallback
    day = scores.groupby([KEY, "assessment"], sort=False)["effective"].min().rename("day")
    values = scores.dropna(subset=["score"]).pivot_table(
        index=[KEY, "assessment"], columns="score", values="value", aggfunc="last", sort=False)
    table = pd.concat([day, values], axis=1).reset_index()
    for score in SCORES:
        if score not in table:
            table[score] = np.nan
    return table[columns]


def _baseline_and_last(assessments: pd.DataFrame, score: str) -> pd.DataFrame:
    """Per patient: value and day of the baseline and last assessment having ``score``."""
    have = assessments.dropna(subset=[score, "day"]).sort_values([KEY, "day"], kind="stable")
    before = have[have["day"] <= 0].groupby(KEY).tail(1).set_index(KEY)
    after = have[have["day"] > 0].groupby(KEY).tail(1).set_index(KEY)
    return pd.DataFrame({
        f"{score}_baseline": before[score], "baseline_day": before["day"],
        f"{score}_last": after[score], "last_day": after["day"],
    })


def build_dataset(deid: DeidentifiedRows) -> Dataset:
    frames = deid.frames
    people = frames[PATIENT_VIEW]
    patients = pd.DataFrame(index=pd.Index(sorted(people[KEY].dropna().unique()), name=KEY))
    base = people.drop_duplicates(KEY).set_index(KEY)
    for view_column, column in PASSTHROUGH.items():
        if view_column in base:
            patients[column] = base[view_column]
    patients["cd_subtype"] = _joined(frames[CONDITION_VIEW], "subtype")
    procedures = frames[PROCEDURE_VIEW]
    patients["target"] = _joined(procedures, "target")
    sessions = procedures.groupby(KEY)["procedure_key"].nunique() if not procedures.empty else pd.Series(dtype="int64")
    patients["sessions"] = sessions.reindex(patients.index).fillna(0).astype("int64")
    patients["day_zero"] = pd.Series(deid.day_zero, dtype="object").reindex(patients.index)
    with_session = patients["day_zero"] == DAY_ZERO_SESSION

    assessments = _assessments(frames[SCORE_VIEW])
    after = assessments[assessments["day"] > 0].groupby(KEY)["day"].max() if not assessments.empty else pd.Series()
    patients["follow_up_days"] = after.reindex(patients.index).where(with_session).astype("Int64")
    events = frames[ADVERSE_EVENT_VIEW].groupby(KEY).size() if not frames[ADVERSE_EVENT_VIEW].empty else pd.Series()
    patients["adverse_events"] = events.reindex(patients.index).fillna(0).astype("int64")

    for score in SCORES:
        pair = _baseline_and_last(assessments, score).reindex(patients.index).where(with_session, axis=0)
        patients[f"{score}_baseline"] = pair[f"{score}_baseline"].astype("float64")
        patients[f"{score}_last"] = pair[f"{score}_last"].astype("float64")
        baseline = patients[f"{score}_baseline"]
        change = 100.0 * (baseline - patients[f"{score}_last"]) / baseline.where(baseline != 0)
        patients[f"{score}_improvement_percent"] = change
        if score == "total":
            patients["baseline_day"] = pair["baseline_day"].astype("Int64")
            patients["last_day"] = pair["last_day"].astype("Int64")

    reason = pd.Series("", index=patients.index, dtype="object")
    reason[patients["total_last"].isna()] = "no-follow-up-assessment"
    reason[patients["total_baseline"].isna()] = "no-baseline-assessment"
    reason[~with_session] = "no-session"
    patients["included"] = reason == ""
    patients["exclusion_reason"] = reason.where(reason != "", None)

    assessments = assessments.merge(
        patients[["day_zero"]], left_on=KEY, right_index=True, how="left")
    assessments["phase"] = np.where(assessments["day_zero"] != DAY_ZERO_SESSION, None,  # type: ignore[call-overload]
                                    np.where(assessments["day"] <= 0, "before", "after"))
    assessments.loc[assessments["day"].isna(), "phase"] = None
    assessments = assessments.rename(columns={KEY: "pseudonym"})
    assessments["day"] = assessments["day"].astype("Int64")
    assessments = assessments.sort_values(["pseudonym", "day"], kind="stable", na_position="last")
    assessments = assessments[["pseudonym", "day", "phase", *SCORES]].reset_index(drop=True)
    patients = patients.reset_index().rename(columns={KEY: "pseudonym"})
    return Dataset(patients[_patient_columns(patients)], assessments,
                   _sessions(procedures, frames.get(PARAMETER_VIEW)), _adverse_events(frames[ADVERSE_EVENT_VIEW]))


def _patient_columns(patients: pd.DataFrame) -> list[str]:
    leading = ["pseudonym", "site", "sex", "age_band", "cd_subtype", "state", "zip3", "target", "sessions",
               "day_zero", "baseline_day", "last_day", "follow_up_days", "adverse_events", "included",
               "exclusion_reason"]
    scores = [f"{s}_{part}" for s in SCORES for part in ("baseline", "last", "improvement_percent")]
    return [c for c in [*leading, *scores] if c in patients]
