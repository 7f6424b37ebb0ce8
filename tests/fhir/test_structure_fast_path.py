"""The fast path of structure validation (``fhirfus.fhir.validation._fast_valid``) never lets through
what the R4 model refuses: it only answers "valid", and every resource it finds valid, the model
finds valid too — the official examples, Synthea's data and many broken variants of them."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhirfus.fhir import validation
from fhirfus.fhir.validation import served_types

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
EXAMPLES = sorted((SHARED / "fhir-r4-examples").glob("*/*.json"))
SYNTHEA = sorted(p for p in (SHARED / "synthea-bulk-10-patients").glob("*.ndjson") if p.name != "log.ndjson")

OBSERVATION = {
    "resourceType": "Observation", "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "vital-signs"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
    "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-03-01",
    "valueQuantity": {"value": 71.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    "component": [{"code": {"text": "x"}, "valueInteger": 3}],
}
PATIENT = {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "1"}], "gender": "female",
           "birthDate": "1970-02-03", "active": True, "contact": [{"name": {"family": "X"}}]}

#: Values put in place of an element's own: wrong JSON types, nulls, malformed primitives.
WRONG = [None, [], [None], {}, "", " x", "x" * 3, 3, 2.5, True, -1, 10**30, "2024-13-45", "2024-02-30T10:00",
         {"unknown": 1}, [{"unknown": 1}], [3], ["a", None], {"text": 3}, [{"text": None}]]


def _resources() -> Iterator[dict[str, Any]]:
    yield OBSERVATION
    yield PATIENT
    for path in EXAMPLES:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("resourceType") in served_types():
            yield data
    for path in SYNTHEA:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines):
                if number < 20:
                    yield json.loads(line)


def _variants(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The resource broken in one place each: every top-level element (and the elements of its first
    object) given a wrong value or dropped, an unknown element, a second value of a choice."""
    for key, value in resource.items():
        if key == "resourceType":
            continue
        for wrong in WRONG:
            yield {**resource, key: wrong}
        yield {k: v for k, v in resource.items() if k != key}
        inner = value[0] if isinstance(value, list) and value else value
        if isinstance(inner, dict):
            for inner_key in list(inner)[:6]:
                for wrong in WRONG[:10]:
                    changed = copy.deepcopy(resource)
                    target = changed[key][0] if isinstance(changed[key], list) else changed[key]
                    target[inner_key] = wrong
                    yield changed
    yield {**resource, "unknownElement": "x"}
    yield {**resource, "_status": {"extension": []}}
    yield {**resource, "valueString": "x", "valueBoolean": True}
    yield {**resource, "deceasedBoolean": True, "deceasedDateTime": "2020"}


def _model_accepts(resource: dict[str, Any]) -> bool:
    return not validation._model_errors(get_fhir_model_class(resource["resourceType"]), resource)


def test_the_fast_path_is_taken_for_ordinary_resources() -> None:
    """Else the test below would hold for nothing."""
    assert validation._fast_valid("Observation", OBSERVATION)
    assert validation._fast_valid("Patient", PATIENT)


@pytest.mark.parametrize("resource", list(_resources()), ids=lambda r: str(r.get("resourceType")))
def test_what_the_fast_path_finds_valid_the_model_finds_valid(resource: dict[str, Any]) -> None:
    resource_type = resource["resourceType"]
    for variant in [resource, *_variants(resource)]:
        if validation._fast_valid(resource_type, variant):
            assert _model_accepts(variant), variant
