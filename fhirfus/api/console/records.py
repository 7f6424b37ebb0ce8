"""What the coordinator pages show of a site's patients, read through the person's ``Access``.

Every read is an ordinary search or read of the interactions layer with the person as caller, so
a site person sees exactly what a client of that site would: another site's patient is not found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhirfus.auth.access import Access
from fhirfus.domain.twstrs import TWSTRS_SYSTEM
from fhirfus.interactions import crud
from fhirfus.interactions.search import search_bundle
from fhirfus.store.repository import Store

MOST = 1000


@dataclass
class PatientRow:
    id: str
    label: str
    gender: str
    birth: str
    sessions: int = 0
    latest_total: float | None = None


@dataclass
class Score:
    date: str
    total: float


@dataclass
class PatientFile:
    id: str
    label: str
    gender: str
    birth: str
    sessions: list[dict[str, str]] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)
    adverse_events: list[dict[str, str]] = field(default_factory=list)


def resources_of(store: Store, caller: Access, res_type: str, params: list[tuple[str, str]]) -> list[dict]:
    bundle = search_bundle(store, caller, "", res_type, [*params, ("_count", str(MOST))],
                           default_count=MOST, max_count=MOST)
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]


def label_of(patient: dict) -> str:
    identifiers = patient.get("identifier") or []
    site_ids = [i.get("value", "") for i in identifiers if "site-patient" in i.get("system", "")]
    if site_ids:
        return site_ids[0]
    names = patient.get("name") or []
    if names:
        return " ".join([*names[0].get("given", []), names[0].get("family", "")]).strip() or patient["id"]
    return patient["id"]


def subject_of(resource: dict) -> str:
    for key in ("subject", "patient"):
        reference = (resource.get(key) or {}).get("reference", "")
        if reference.startswith("Patient/"):
            return reference.removeprefix("Patient/")
    return ""


def total_of(observation: dict) -> float | None:
    quantity = observation.get("valueQuantity") or {}
    value = quantity.get("value", observation.get("valueInteger"))
    return float(value) if isinstance(value, int | float) else None


def _is_total(observation: dict) -> bool:
    return any(c.get("system") == TWSTRS_SYSTEM and c.get("code") == "total"
               for c in (observation.get("code") or {}).get("coding", []))


def patients(store: Store, caller: Access) -> list[PatientRow]:
    """The caller's patients with their session count and latest TWSTRS total."""
    rows = {p["id"]: PatientRow(p["id"], label_of(p), p.get("gender", ""), p.get("birthDate", ""))
            for p in resources_of(store, caller, "Patient", [("_sort", "_id")])}
    for procedure in resources_of(store, caller, "Procedure", []):
        row = rows.get(subject_of(procedure))
        if row:
            row.sessions += 1
    latest: dict[str, tuple[str, float]] = {}
    for observation in resources_of(store, caller, "Observation", [("code", f"{TWSTRS_SYSTEM}|total")]):
        when, total = observation.get("effectiveDateTime", ""), total_of(observation)
        subject = subject_of(observation)
        if total is not None and subject in rows and when >= latest.get(subject, ("", 0.0))[0]:
            latest[subject] = (when, total)
    for subject, (_, total) in latest.items():
        rows[subject].latest_total = total
    return sorted(rows.values(), key=lambda r: r.label)


def _coding_text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    codings = concept.get("coding") or []
    return concept.get("text") or ", ".join(c.get("display") or c.get("code", "") for c in codings)


def patient_file(store: Store, caller: Access, patient_id: str) -> PatientFile:
    """One patient with sessions, TWSTRS totals over time and adverse events (404 if not the caller's)."""
    patient = crud.read(store, caller, "Patient", patient_id).content or {"id": patient_id}
    found = PatientFile(patient["id"], label_of(patient), patient.get("gender", ""), patient.get("birthDate", ""))
    reference = f"Patient/{patient['id']}"
    for procedure in resources_of(store, caller, "Procedure", [("subject", reference), ("_sort", "date")]):
        found.sessions.append({
            "date": procedure.get("performedDateTime") or (procedure.get("performedPeriod") or {}).get("start", ""),
            "what": _coding_text(procedure.get("code")),
            "target": ", ".join(_coding_text(s) for s in procedure.get("bodySite") or []),
            "status": procedure.get("status", ""),
        })
    for observation in resources_of(store, caller, "Observation",
                                  [("subject", reference), ("code", f"{TWSTRS_SYSTEM}|total"), ("_sort", "date")]):
        total = total_of(observation)
        if total is not None and _is_total(observation):
            found.scores.append(Score(observation.get("effectiveDateTime", "")[:10], total))
    for event in resources_of(store, caller, "AdverseEvent", [("subject", reference)]):
        found.adverse_events.append({"date": event.get("date", ""), "what": _coding_text(event.get("event")),
                                     "seriousness": _coding_text(event.get("seriousness"))})
    return found


def trajectory_svg(scores: list[Score], width: int = 480, height: int = 200) -> dict[str, Any]:
    """Points and axis labels of a small TWSTRS total plot (the template draws the SVG)."""
    if not scores:
        return {"points": [], "width": width, "height": height}
    pad, top = 40, 85.0  # TWSTRS total is 0–85
    step = (width - 2 * pad) / max(len(scores) - 1, 1)
    points = [{"x": round(pad + i * step, 1), "y": round(height - pad - (s.total / top) * (height - 2 * pad), 1),
               "label": f"{s.date}: {s.total:g}"} for i, s in enumerate(scores)]
    return {"points": points, "width": width, "height": height, "pad": pad,
            "polyline": " ".join(f"{p['x']},{p['y']}" for p in points), "first": scores[0].date, "last": scores[-1].date}
