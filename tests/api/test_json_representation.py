"""The R4 JSON representation rules and primitive formats that the structural models let through."""

from __future__ import annotations

import base64
import hashlib

import httpx
import pytest

from fhirfus.fhir.validation import resource_issues

OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}


def located(resource: dict) -> list[tuple[str, ...]]:
    return [i.expression for i in resource_issues(resource)]


@pytest.mark.parametrize(("resource", "where"), [
    ({"resourceType": "Patient", "name": []}, "Patient.name"),
    ({"resourceType": "Patient", "name": [{"family": ""}]}, "Patient.name[0].family"),
    ({"resourceType": "Patient", "gender": None}, "Patient.gender"),
    ({"resourceType": "Patient", "name": [{"resourceType": "HumanName", "family": "Doe"}]}, "Patient.name[0].resourceType"),
    ({"resourceType": "Patient", "contained": [{"id": "o"}]}, "Patient.contained[0].resourceType"),
    ({"resourceType": "Patient", "name": [{"given": ["Ann", None]}]}, "Patient.name[0].given[1]"),
    ({"resourceType": "Patient", "name": [{"given": ["Ann", "Bo"], "_given": [{"id": "a"}]}]},
     "Patient.name[0]._given"),
    ({"resourceType": "Patient", "name": [{"given": ["Ann", None], "_given": [{"id": "a"}, None]}]},
     "Patient.name[0].given[1]"),
])
def test_empty_values_nulls_and_unaligned_arrays_are_refused(resource: dict, where: str) -> None:
    assert (where,) in located(resource)


def test_null_keeps_a_primitive_array_aligned_with_its_extensions() -> None:
    name = {"given": ["Ann", None], "_given": [None, {"extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}]}
    assert located({"resourceType": "Patient", "name": [name]}) == []


@pytest.mark.parametrize(("resource", "where"), [
    ({"resourceType": "Patient", "active": "true"}, "Patient.active"),
    ({"resourceType": "Patient", "name": [{"family": "Do\u0000e"}]}, "Patient.name[0].family"),
    ({"resourceType": "Patient", "name": [{"text": "bell\u0007"}]}, "Patient.name[0].text"),
    ({**OBS, "valueQuantity": {"value": "1.5"}}, "Observation.valueQuantity.value"),
    ({**OBS, "valueQuantity": {"value": True}}, "Observation.valueQuantity.value"),
    ({**OBS, "valueInteger": 1.5}, "Observation.valueInteger"),
    ({"resourceType": "Patient", "implicitRules": "http://a b"}, "Patient.implicitRules"),
    ({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "x" * 65}]},
     "Patient.contained[0].id"),
    ({"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.a"}]}, "Patient.identifier[0].system"),
    ({"resourceType": "Patient", "identifier": [{"system": "urn:uuid:not-a-uuid"}]}, "Patient.identifier[0].system"),
    ({"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8*"}, "Binary.data"),
    ({"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8=="}, "Binary.data"),
    ({"resourceType": "Patient", "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                                "valueDateTime": "2020-01-01T10:00"}]}, "Patient.extension[0].valueDateTime"),
])
def test_primitives_must_have_their_json_type_and_format(resource: dict, where: str) -> None:
    assert (where,) in located(resource)


@pytest.mark.parametrize("system", ["snomed", "http://hl7.org/fhir/ValueSet/administrative-gender"])
def test_a_coding_system_is_an_absolute_uri_of_a_code_system(system: str) -> None:
    concept = {"coding": [{"system": system, "code": "x"}]}
    assert located({"resourceType": "Patient", "maritalStatus": concept}) == [("Patient.maritalStatus.coding[0].system",)]
    concept["coding"][0]["system"] = "urn:oid:2.16.840.1.113883.6.96"
    assert located({"resourceType": "Patient", "maritalStatus": concept}) == []


@pytest.mark.parametrize("value", [-(2**31), 2**31 - 1])
def test_integers_within_32_bits_are_accepted(value: int) -> None:
    assert located({**OBS, "valueInteger": value}) == []


def test_base64_whitespace_is_only_a_warning() -> None:
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVs bG8="}
    assert resource_issues(binary) == []
    assert [i.severity for i in resource_issues(binary, warnings=True)] == ["warning"]


def attachment(data: bytes, **extra: object) -> dict:
    return {"resourceType": "DocumentReference", "status": "current",
            "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(data).decode(), **extra}}]}


def test_attachment_size_and_hash_must_match_the_data() -> None:
    good_hash = base64.b64encode(hashlib.sha1(b"hello").digest()).decode()
    assert located(attachment(b"hello", size=5, hash=good_hash)) == []
    assert located(attachment(b"hello", size=6)) == [("DocumentReference.content[0].attachment.size",)]
    wrong_hash = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    assert located(attachment(b"hello", hash=wrong_hash)) == [("DocumentReference.content[0].attachment.hash",)]


def test_tabs_and_line_breaks_are_fine_in_strings() -> None:
    assert located({"resourceType": "Patient", "name": [{"text": "a\tb\r\nc"}]}) == []


def test_a_nul_in_a_string_is_a_400_on_both_databases(client: httpx.Client) -> None:
    response = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Do\u0000e"}]})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.name[0].family"]


def test_a_bad_value_over_http_is_a_400_naming_the_element(client: httpx.Client) -> None:
    response = client.post("/Patient", json={"resourceType": "Patient", "name": [{"given": []}]})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.name[0].given"]


def test_json_nested_beyond_the_checks_recursion_is_an_error_not_a_crash() -> None:
    from fhirfus.fhir.checks import rule_issues

    extension: dict = {"url": "https://x.org/a", "valueString": "x"}
    for _ in range(3000):
        extension = {"url": "https://x.org/a", "extension": [extension]}
    issues = rule_issues({"resourceType": "Patient", "extension": [extension]}, "Patient")
    assert [(i.severity, i.code) for i in issues] == [("error", "too-costly")]


def test_a_remembered_verdict_on_a_string_holds_for_its_type_only() -> None:
    """Verdicts on short strings are remembered by (type, string): the same text is a fine string
    and a bad uri, each time it is seen."""
    text = "urn:oid:1.x"
    for _ in range(2):
        assert resource_issues({"resourceType": "Basic", "code": {"text": text}}) == []
        [issue] = resource_issues({"resourceType": "Basic", "code": {"coding": [{"system": text}]}})
        assert (issue.diagnostics, issue.expression) == (f"'{text}' is not a valid uri", ("Basic.code.coding[0].system",))
