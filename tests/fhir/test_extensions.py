"""Extensions are checked against the R4 core and fhirfus definitions: context, cardinality, value
type, sub-extensions, ext-1; unknown ones in core or fhirfus namespaces are errors, others warnings."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirfus.fhir.extensions import definitions
from fhirfus.fhir.validation import resource_issues
from tests.r4_definitions import R4_DEFINITIONS

CORE = "http://hl7.org/fhir/StructureDefinition/"
DEFINITIONS_DIR = R4_DEFINITIONS


def patient(*extensions: dict, **elements: object) -> dict:
    return {"resourceType": "Patient", "extension": list(extensions), **elements}


def issues(resource: dict) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(i.severity, i.diagnostics, i.expression) for i in resource_issues(resource, warnings=True)]


def test_a_core_extension_used_as_defined_passes() -> None:
    birth_place = {"url": f"{CORE}patient-birthPlace", "valueAddress": {"city": "Bern"}}
    nationality = {"url": f"{CORE}patient-nationality", "extension": [
        {"url": "code", "valueCodeableConcept": {"text": "CH"}}, {"url": "period", "valuePeriod": {"start": "2001"}}]}
    absent = {"url": f"{CORE}data-absent-reason", "valueCode": "unknown"}
    assert issues(patient(birth_place, nationality, _birthDate={"extension": [absent]})) == []


def test_the_wrong_value_type_is_an_error_naming_the_value() -> None:
    found = issues(patient({"url": f"{CORE}patient-birthPlace", "valueString": "Bern"}))
    assert [(s, e) for s, _, e in found] == [("error", ("Patient.extension[0].valueString",))]
    assert "Address" in found[0][1]


def test_an_extension_outside_its_context_is_an_error() -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "extension": [{"url": f"{CORE}patient-birthPlace", "valueAddress": {"city": "Bern"}}]}
    found = issues(observation)
    assert [(s, e) for s, _, e in found] == [("error", ("Observation.extension[0]",))]
    assert "not allowed on Observation" in found[0][1]


def test_an_extension_beyond_its_cardinality_is_an_error() -> None:
    twice = [{"url": f"{CORE}patient-birthPlace", "valueAddress": {"city": c}} for c in ("Bern", "Basel")]
    assert [(s, e) for s, _, e in issues(patient(*twice))] == [("error", ("Patient.extension",))]


def test_sub_extensions_are_checked_by_their_definition() -> None:
    unknown_sub = {"url": f"{CORE}patient-nationality", "extension": [{"url": "colour", "valueString": "red"}]}
    wrong_type = {"url": f"{CORE}patient-nationality", "extension": [{"url": "code", "valueString": "CH"}]}
    assert [e for _, _, e in issues(patient(unknown_sub))] == [("Patient.extension[0].extension[0].url",)]
    assert [e for _, _, e in issues(patient(wrong_type))] == [("Patient.extension[0].extension[0].valueString",)]


def test_a_modifier_extension_goes_in_modifier_extension_and_only_there() -> None:
    birth_place = {"url": f"{CORE}patient-birthPlace", "valueAddress": {"city": "Bern"}}
    assert [e for _, _, e in issues({"resourceType": "Patient", "modifierExtension": [birth_place]})] == [
        ("Patient.modifierExtension[0]",)]
    do_not = {"url": f"{CORE}request-doNotPerform", "valueBoolean": True}
    order = {"resourceType": "NutritionOrder", "status": "active", "intent": "order", "patient": {"reference": "Patient/p"},
             "dateTime": "2024-01-01"}
    assert issues({**order, "modifierExtension": [do_not]}) == []
    assert [e for _, _, e in issues({**order, "extension": [do_not]})] == [("NutritionOrder.extension[0]",)]


@pytest.mark.parametrize("extension", [
    {"url": "https://example.org/x", "valueString": "a", "extension": [{"url": "https://example.org/y", "valueString": "b"}]},
    {"url": "https://example.org/x"},
])
def test_ext1_value_or_sub_extensions_not_both_not_neither(extension: dict) -> None:
    found = [(s, m[:5], e) for s, m, e in issues(patient(extension)) if s == "error"]
    assert found == [("error", "ext-1", ("Patient.extension[0]",))]


def test_unknown_extensions_in_owned_namespaces_are_errors_elsewhere_warnings() -> None:
    core = issues(patient({"url": f"{CORE}patient-favouriteColour", "valueString": "red"}))
    fhirfus = issues(patient({"url": "https://fhirfus.org/fhir/StructureDefinition/nope", "valueString": "x"}))
    us_core = issues(patient({"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": "F"}))
    other = issues(patient({"url": "https://ehr.example/ext/ward", "valueString": "3B"}))
    assert [s for s, _, _ in core] == ["error"] and [s for s, _, _ in fhirfus] == ["error"]
    assert [s for s, _, _ in us_core] == ["warning"] and [s for s, _, _ in other] == ["warning"]
    assert resource_issues(patient({"url": "https://ehr.example/ext/ward", "valueString": "3B"})) == []


def test_the_guides_extensions_are_known_with_their_context() -> None:
    laterality = definitions()["https://fhirfus.org/fhir/StructureDefinition/laterality"]
    assert laterality["ctx"] == ["Procedure.bodySite"] and laterality["value"] == ["CodeableConcept"]
    procedure = {"resourceType": "Procedure", "status": "completed", "subject": {"reference": "Patient/p"},
                 "bodySite": [{"text": "left", "extension": [{"url": "https://fhirfus.org/fhir/StructureDefinition/laterality",
                                                              "valueCodeableConcept": {"text": "left"}}]}]}
    assert issues(procedure) == []
    procedure["extension"] = procedure["bodySite"][0].pop("extension")  # the right resource, the wrong element
    assert [(s, e) for s, _, e in issues(procedure)] == [("warning", ("Procedure.extension[0]",))]
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p"}, "extension": procedure["extension"]}
    assert [(s, e) for s, _, e in issues(condition)] == [("error", ("Condition.extension[0]",))]


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_extensions", Path(__file__).resolve().parents[2] / "tools" / "gen_extensions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_guides_extension_definitions_are_in_the_table_as_they_are_now() -> None:
    generator = _generator()
    guide = [json.loads(p.read_text()) for p in sorted(generator.IG_PROFILES.glob("*.json"))]
    extensions = [d for d in guide if d.get("type") == "Extension"]
    assert extensions
    for definition in extensions:
        assert definitions()[definition["url"]] == generator.compact(definition), definition["url"]


@pytest.mark.skipif(not DEFINITIONS_DIR.is_dir(), reason=f"R4 definitions not unpacked at {DEFINITIONS_DIR}")
def test_the_generated_table_is_current() -> None:
    generator = _generator()
    assert generator.generate(DEFINITIONS_DIR) == json.loads(generator.OUTPUT.read_text())


def test_a_misplaced_extension_is_refused_over_http(client: httpx.Client) -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "extension": [{"url": f"{CORE}patient-birthPlace", "valueAddress": {"city": "Bern"}}]}
    response = client.post("/Observation", json=observation)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Observation.extension[0]"]
