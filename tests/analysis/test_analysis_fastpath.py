"""The compiled fast path gives exactly the reference runner's rows (official suite and our views)."""

from __future__ import annotations

import contextlib
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fhirfus.analysis.views import VIEW_DIR, analysis_views
from fhirfus.sqlonfhir.fastpath import compile_fast
from fhirfus.sqlonfhir.runner import (
    ViewDefinitionError,
    ViewEvaluationError,
    compile_view,
)

SUITE_DIR = Path("/work/shared/data/sql-on-fhir-v2/tests")
SUITES = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(SUITE_DIR.glob("*.json"))} \
    if SUITE_DIR.is_dir() else {}
needs_suite = pytest.mark.skipif(not SUITES, reason=f"SQL on FHIR v2 suite not found at {SUITE_DIR}")


def _normalize(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


def _multiset(rows: list[dict]) -> Counter:
    return Counter(json.dumps(_normalize(r), sort_keys=True) for r in rows)


def _outcome(view: dict, resources: list[dict]) -> str | Counter:
    try:
        compiled = compile_fast(view)
        return _multiset([row for resource in resources for row in compiled.rows(resource)])
    except (ViewDefinitionError, ViewEvaluationError) as exc:
        return type(exc).__name__


@needs_suite
def test_official_suite_passes_through_the_fast_path() -> None:
    failures, compiled = [], 0
    for name, suite in SUITES.items():
        for case in suite["tests"]:
            outcome = _outcome(case["view"], suite["resources"])
            with contextlib.suppress(ViewDefinitionError):
                compiled += compile_fast(case["view"]).fast
            if case.get("expectError"):
                ok = isinstance(outcome, str)
            else:
                ok = not isinstance(outcome, str) and ("expect" not in case or outcome == _multiset(case["expect"]))
            if not ok:
                failures.append(f"{name}/{case['title']}: {outcome}")
    assert failures == []
    assert compiled >= 50  # the cases really ran compiled, not only through the fallback


def _variants(rng: random.Random, resource: dict) -> list[dict]:
    """The resource plus edge cases: elements removed, codings doubled, references retyped."""
    out = [resource]
    for key in [k for k in resource if k not in ("resourceType", "id")]:
        out.append({k: v for k, v in resource.items() if k != key})
    if "code" in resource and resource["code"].get("coding"):
        doubled = json.loads(json.dumps(resource))
        doubled["code"]["coding"] = doubled["code"]["coding"] * 2
        out.append(doubled)
    if "subject" in resource:
        out.append({**resource, "subject": {"reference": "Group/x"}})
        out.append({**resource, "subject": {"reference": f"https://other.example/fhir/Patient/p{rng.randint(1, 9)}/_history/2"}})
    if "status" in resource:
        out.append({**resource, "status": "entered-in-error"})
    return out


def test_analysis_views_are_compiled_not_interpreted() -> None:
    views = analysis_views(VIEW_DIR)
    assert views and all(v.compiled.fast for v in views), [(v.name, v.compiled.unsupported) for v in views]


def test_analysis_views_give_the_reference_rows_on_edge_cases() -> None:
    rng = random.Random(1)
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1950-02-03",
               "meta": {"security": [{"system": "https://fhirfus.org/fhir/CodeSystem/site", "code": "A"}]},
               "address": [{"state": "CO", "postalCode": "80210"}, {"postalCode": "10001"}], "active": True}
    condition = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                 "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "G24.3"},
                                     {"system": "https://fhirfus.org/fhir/CodeSystem/cd-subtype", "code": "laterocollis"},
                                     {"system": "https://fhirfus.org/fhir/CodeSystem/cd-subtype", "code": "retrocollis"}]}}
    procedure = {"resourceType": "Procedure", "id": "s1", "status": "completed", "subject": {"reference": "Patient/p1"},
                 "code": {"coding": [{"system": "https://fhirfus.org/fhir/CodeSystem/procedure", "code": "mrgfus-ablation"},
                                     {"system": "http://www.ama-assn.org/go/cpt", "code": "0398T"}]},
                 "performedPeriod": {"start": "2022-03-15T08:00:00+01:00"},
                 "bodySite": [{"coding": [{"system": "https://fhirfus.org/fhir/CodeSystem/mrgfus-target", "code": "vo-complex"}]},
                              {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}]}
    event = {"resourceType": "AdverseEvent", "id": "e1", "actuality": "actual", "subject": {"reference": "Patient/p1"},
             "event": {"coding": [{"system": "https://fhirfus.org/fhir/CodeSystem/adverse-event", "code": "headache"}]}}
    score = {"resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": "Patient/p1"},
             "code": {"coding": [{"system": "https://fhirfus.org/fhir/CodeSystem/twstrs", "code": "pain"}]},
             "effectiveDateTime": "2022-06-01", "valueQuantity": {"value": 12.25},
             "derivedFrom": [{"reference": "QuestionnaireResponse/q1"}]}
    resources = [r for base in (patient, condition, procedure, event, score)
                 for r in _variants(rng, base)]
    for view in analysis_views(VIEW_DIR):
        raw = json.loads((VIEW_DIR / view.file).read_text())
        reference = compile_view(raw)
        for resource in resources:
            assert view.compiled.rows(resource) == reference.rows(resource), (view.name, resource)
