"""Apply a de-identification policy to the cohort's view rows, column by column.

The result holds no identifier, no calendar date and no free text: patient keys are pseudonyms,
other resource keys opaque numbers, dates whole days since the patient's day zero (the policy's
reference: the first MRgFUS session, else the first TWSTRS assessment), birth dates age bands.
It is all the dataset builder ever sees.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

import pandas as pd

from fhirfus.analysis.deid.policy import (
    DateReference,
    Policy,
    Rule,
    ViewColumn,
    age_band,
    age_years,
    birth_day,
    keep_value,
    parse_day,
    zip3,
)
from fhirfus.analysis.source import PATIENT_KEY, SourceRows
from fhirfus.analysis.views import AnalysisView

DAY_ZERO_SESSION = "first-session"
DAY_ZERO_ASSESSMENT = "first-assessment"


@dataclass
class DeidentifiedRows:
    """One DataFrame per view (released columns only) plus what the policy blanked."""

    frames: dict[str, pd.DataFrame]
    day_zero: dict[str, str]           # pseudonym → which event is its day 0
    blanked: Counter                    # "view.column" → values outside their vocabulary
    released: dict[str, list[str]]      # view → released columns


def _first_days(source: SourceRows, ref: DateReference | None) -> dict[str, date]:
    if ref is None or ref.view not in source.rows:
        return {}
    names = source.columns[ref.view]
    key, column = names.index(PATIENT_KEY), names.index(ref.column)
    first: dict[str, date] = {}
    for row in source.rows[ref.view]:
        day = parse_day(row[column])
        if day is not None and (row[key] not in first or day < first[row[key]]):
            first[row[key]] = day
    return first


def reference_days(source: SourceRows, policy: Policy) -> tuple[dict[str, date], dict[str, str]]:
    """Day zero of every patient that has one, and which event it is."""
    primary = _first_days(source, policy.reference)
    fallback = _first_days(source, policy.fallback)
    days = {**fallback, **primary}
    kinds = {p: DAY_ZERO_SESSION if p in primary else DAY_ZERO_ASSESSMENT for p in days}
    return days, kinds


def column_function(rule: Rule, column: ViewColumn, policy: Policy, pseudonym_of: Mapping[str, str],
                     blanked: Counter, label: str) -> Callable[[Any, date | None], Any]:
    """value, patient's day zero → released value, for one column (resolved once, applied per row)."""
    if rule.kind == "pseudonym":
        return lambda value, _zero: None if value is None else pseudonym_of[value]
    if rule.kind == "opaque":
        numbers: dict[Any, int] = {}
        return lambda value, _zero: None if value is None else numbers.setdefault(value, len(numbers) + 1)
    if rule.kind == "day-offset":
        def offset(value: Any, zero: date | None) -> int | None:
            day = _day(value)
            return (day - zero).days if day is not None and zero is not None else None
        return offset
    if rule.kind == "age-band":
        def band(value: Any, zero: date | None) -> str | None:
            born = birth_day(value)
            age = age_years(born, zero) if born is not None and zero is not None else None
            return age_band(age, policy.band_years, policy.top_code)
        return band
    if rule.kind == "zip3":
        return lambda value, _zero: zip3(value, policy.restricted_zip3)

    def keep(value: Any, _zero: date | None) -> Any:
        released, lost = keep_value(value, rule, column.allowed)
        if lost:
            blanked[label] += 1
        return released
    return keep


@lru_cache(maxsize=65536)
def _day(value: Any) -> date | None:
    """``parse_day`` memoised: the same few thousand dates recur on every score of an assessment."""
    return parse_day(value)


def deidentify(source: SourceRows, views: Sequence[AnalysisView], policy: Policy,
               pseudonym_of: Mapping[str, str]) -> DeidentifiedRows:
    days, kinds = reference_days(source, policy)
    blanked: Counter = Counter()
    frames: dict[str, pd.DataFrame] = {}
    released: dict[str, list[str]] = {}
    for view in views:
        key = view.names.index(PATIENT_KEY)
        plan = [(i, c, policy.rule(view.name, c.name)) for i, c in enumerate(view.columns)]
        plan = [(i, c, r) for i, c, r in plan if r.kind != "drop"]
        steps = [(i, column_function(r, c, policy, pseudonym_of, blanked, f"{view.name}.{c.name}"))
                 for i, c, r in plan]
        out = [tuple(fn(row[i], days.get(row[key])) for i, fn in steps) for row in source.rows[view.name]]
        columns = [c.name for _, c, _ in plan]
        frames[view.name] = pd.DataFrame.from_records(out, columns=columns) if out else pd.DataFrame(columns=columns)
        released[view.name] = columns
    day_zero = {pseudonym_of[p]: kind for p, kind in kinds.items() if p in pseudonym_of}
    return DeidentifiedRows(frames, day_zero, blanked, released)
