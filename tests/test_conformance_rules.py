"""Conformance resources that name core search parameters agree with them (as the reference
validator checks): composite parameters have components, derived parameters keep type and
bases, a CapabilityStatement's search parameter has its definition's type."""

from __future__ import annotations

from fhirfus.fhir.conformance_rules import conformance_issues, core_parameter

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
