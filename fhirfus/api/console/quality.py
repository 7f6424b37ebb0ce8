"""The coordinator's data-quality page: what a site's records lack or hold twice, per patient.

Follow-up visits are at about 1, 3, 6 and 12 months after the first MRgFUS session (domain.md; day
30 ± 14, 91 ± 30, 182 ± 30, 365 ± 60), the last three required; a TWSTRS assessment after the first
session and before the end of the 12-month window that falls in no window is out of window; two
assessments on one day are a duplicate visit; treatment parameters outside the plausible ranges of
the guide (``fhirfus/ig/rules/plausibility.json``) are flagged with the rule's own message. A
window not yet closed today is not reported missing. Everything is read through the caller's
``Access``, like the other coordinator pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from fhirfus.api.console.records import label_of, resources_of, subject_of, total_of
from fhirfus.auth.access import Access
from fhirfus.domain.rules import domain_issues
from fhirfus.domain.twstrs import TWSTRS_SYSTEM
from fhirfus.store.repository import Store

#: (name, target day after the first session, tolerance in days, required)
FOLLOW_UPS = (("1-month", 30, 14, False), ("3-month", 91, 30, True), ("6-month", 182, 30, True),
              ("12-month", 365, 60, True))


@dataclass(frozen=True)
class Finding:
    patient_id: str
    patient: str
    kind: str
    detail: str


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text[:10])
    except (TypeError, ValueError):
        return None


def findings(store: Store, caller: Access, today: date | None = None) -> list[Finding]:
    today = today or date.today()
    labels = {p["id"]: label_of(p) for p in resources_of(store, caller, "Patient", [])}
    sessions: dict[str, list[date]] = {}
    for procedure in resources_of(store, caller, "Procedure", []):
        when = _day(procedure.get("performedDateTime") or (procedure.get("performedPeriod") or {}).get("start", ""))
        if when:
            sessions.setdefault(subject_of(procedure), []).append(when)
    assessments: dict[str, list[date]] = {}
    found: list[Finding] = []
    for observation in resources_of(store, caller, "Observation", []):
        subject = subject_of(observation)
        codings = (observation.get("code") or {}).get("coding", [])
        if any(c.get("system") == TWSTRS_SYSTEM and c.get("code") == "total" for c in codings):
            when = _day(observation.get("effectiveDateTime", ""))
            if when and total_of(observation) is not None:
                assessments.setdefault(subject, []).append(when)
            continue
        for issue in domain_issues(observation):
            if subject in labels:
                found.append(Finding(subject, labels[subject], "implausible treatment parameter",
                                     f"{observation.get('effectiveDateTime', '')[:10]}: {issue.diagnostics}"))
    for patient_id, label in labels.items():
        days = sorted(assessments.get(patient_id, []))
        first = min(sessions[patient_id]) if patient_id in sessions else None
        for day in sorted({d for d in days if days.count(d) > 1}):
            found.append(Finding(patient_id, label, "duplicate visit", f"{days.count(day)} TWSTRS assessments on {day}"))
        if first is None:
            found.append(Finding(patient_id, label, "no treatment session", "no MRgFUS session recorded"))
            continue
        if not any(d <= first for d in days):
            found.append(Finding(patient_id, label, "missing baseline", f"no TWSTRS assessment on or before {first}"))
        windows = [(name, first + timedelta(days=t - w), first + timedelta(days=t + w), required)
                   for name, t, w, required in FOLLOW_UPS]
        for name, start, end, required in windows:
            if required and end < today and not any(start <= d <= end for d in days):
                found.append(Finding(patient_id, label, f"missing {name} follow-up", f"none between {start} and {end}"))
        for day in sorted(set(days)):
            if first < day <= windows[-1][2] and not any(start <= day <= end for _, start, end, _ in windows):
                found.append(Finding(patient_id, label, "out-of-window visit",
                                     f"TWSTRS on {day}, day {(day - first).days} after the first session"))
    return sorted(found, key=lambda f: (f.kind, f.patient))
