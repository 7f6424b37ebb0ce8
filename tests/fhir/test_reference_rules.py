"""Reference rules of R4 that need no database: a reference names a type its element allows
(the element's target profiles), a relative one a resource type and an id by the R4 id rule, and a
``#id`` reference names a contained resource.

Checked on every write and by ``$validate`` (``fhir.validation.resource_issues``); over HTTP the
write is refused with 400 naming the element.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhirfus.fhir.bindings import check_elements
from fhirfus.fhir.validation import resource_issues


def observation(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, **fields}


def problems(resource: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v.expression, v.code) for v in check_elements(resource)]


@pytest.mark.parametrize("reference", [
    "Patient/1", "Group/g", "Device/d", "Location/l", "Patient/1/_history/2",
    "https://elsewhere.example/fhir/Patient/1", "Patient?identifier=urn:x|1",
    "urn:uuid:0c1f4f7e-0000-4000-8000-000000000000",
])
def test_a_reference_to_an_allowed_type_or_of_unknown_type_passes(reference: str) -> None:
    assert problems(observation(subject={"reference": reference})) == []


@pytest.mark.parametrize("reference", [
    "Medication/1", "Observation/2/_history/1", "http://server.example/fhir/Practitioner/1",
    "Encounter?identifier=x",
])
def test_a_reference_to_a_type_the_element_does_not_allow_is_invalid(reference: str) -> None:
    [violation] = check_elements(observation(subject={"reference": reference}))
    assert (violation.expression, violation.code) == ("Observation.subject.reference", "invalid")
    assert "Observation.subject cannot refer to a" in violation.message
    assert "Device, Group, Location, Patient" in violation.message


@pytest.mark.parametrize(("reference", "why"), [
    ("Patient/" + "x" * 65, "names no Patient"), ("Patient/a b", "names no Patient"), ("Patient/", "names no Patient"),
    ("Patient/1/_history/" + "1" * 65, "names no Patient"), ("Zzqq/1", "names no resource type"),
    ("Z" * 65 + "/1", "names no resource type"),
])
def test_a_relative_reference_no_resource_can_answer_is_invalid(reference: str, why: str) -> None:
    """An id is 1-64 characters of ``[A-Za-z0-9.-]`` and a type is a resource type: a relative reference
    beyond them names nothing, on this server or any (and would not fit the reference index)."""
    [violation] = check_elements(observation(subject={"reference": reference}))
    assert (violation.expression, violation.code) == ("Observation.subject.reference", "invalid")
    assert why in violation.message


def test_the_declared_type_is_checked_too() -> None:
    assert problems(observation(subject={"type": "Medication", "identifier": {"value": "1"}})) == [
        ("Observation.subject.type", "invalid")]
    assert problems(observation(subject={
        "type": "http://hl7.org/fhir/StructureDefinition/Patient", "identifier": {"value": "1"}})) == []


def test_elements_that_allow_any_resource_accept_any_type() -> None:
    provenance = {"resourceType": "Provenance", "recorded": "2024-01-01T00:00:00Z",
                  "target": [{"reference": "Medication/1"}, {"reference": "Patient/2"}],
                  "agent": [{"who": {"reference": "Practitioner/p"}}]}
    assert problems(provenance) == []


@pytest.mark.parametrize("where", ["backbone", "choice", "datatype", "bundle-entry", "contained"])
def test_targets_are_checked_wherever_the_reference_sits(where: str) -> None:
    wrong = {"reference": "Medication/1"}
    if where == "backbone":
        resource = {"resourceType": "Patient", "contact": [{"organization": wrong}]}
        expected = "Patient.contact[0].organization.reference"
    elif where == "choice":
        resource = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                    "subject": {"reference": "Patient/1"}, "reportedReference": wrong,
                    "medicationCodeableConcept": {"text": "x"}}
        expected = "MedicationRequest.reportedReference.reference"
    elif where == "datatype":
        resource = observation(note=[{"authorReference": wrong, "text": "n"}])
        expected = "Observation.note[0].authorReference.reference"
    elif where == "bundle-entry":
        resource = {"resourceType": "Bundle", "type": "collection",
                    "entry": [{"resource": observation(subject=wrong)}]}
        expected = "Bundle.entry[0].resource.subject.reference"
    else:
        resource = {"resourceType": "Patient", "contained": [observation(id="o", subject=wrong)]}
        expected = "Patient.contained[0].subject.reference"
    assert problems(resource) == [(expected, "invalid")]


def test_a_contained_reference_must_name_a_contained_resource() -> None:
    practitioner = {"resourceType": "Practitioner", "id": "pr"}
    ok = observation(contained=[practitioner], performer=[{"reference": "#pr"}])
    assert problems(ok) == []
    missing = observation(contained=[practitioner], performer=[{"reference": "#nobody"}])
    assert problems(missing) == [("Observation.performer[0].reference", "not-found")]
    assert problems(observation(performer=[{"reference": "#pr"}])) == [
        ("Observation.performer[0].reference", "not-found")]


def test_a_contained_reference_must_name_an_allowed_type() -> None:
    medication = {"resourceType": "Medication", "id": "m"}
    assert problems(observation(contained=[medication], performer=[{"reference": "#m"}])) == [
        ("Observation.performer[0].reference", "invalid")]


def test_contained_resources_refer_to_each_other_and_to_their_container() -> None:
    organization = {"resourceType": "Organization", "id": "org"}
    practitioner_role = {"resourceType": "PractitionerRole", "id": "role",
                         "organization": {"reference": "#org"}}
    patient = {"resourceType": "Patient", "contained": [organization, practitioner_role],
               "generalPractitioner": [{"reference": "#role"}], "managingOrganization": {"reference": "#org"}}
    assert problems(patient) == []
    # '#' alone names the container: a Patient is not an Organization
    assert problems({"resourceType": "Patient", "managingOrganization": {"reference": "#"}}) == [
        ("Patient.managingOrganization.reference", "invalid")]


def test_each_bundle_entry_is_a_container_of_its_own() -> None:
    first = {"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "o"}],
             "managingOrganization": {"reference": "#o"}}
    second = {"resourceType": "Patient", "managingOrganization": {"reference": "#o"}}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": first}, {"resource": second}]}
    assert problems(bundle) == [("Bundle.entry[1].resource.managingOrganization.reference", "not-found")]


def test_write_validation_reports_reference_rules_as_errors() -> None:
    [issue] = resource_issues(observation(subject={"reference": "Medication/1"}))
    assert (issue.severity, issue.code, issue.expression) == ("error", "invalid", ("Observation.subject.reference",))


def test_over_http_a_wrong_target_or_a_dangling_contained_reference_is_400(client: httpx.Client) -> None:
    wrong = client.post("/Observation", json=observation(subject={"reference": "Medication/1"}))
    assert wrong.status_code == 400
    assert wrong.json()["issue"][0]["expression"] == ["Observation.subject.reference"]
    dangling = client.post("/Observation", json=observation(performer=[{"reference": "#nobody"}]))
    assert dangling.status_code == 400
    assert dangling.json()["issue"][0]["expression"] == ["Observation.performer[0].reference"]
    validate = client.post("/Observation/$validate", json=observation(subject={"reference": "Medication/1"}))
    assert "Observation.subject.reference" in validate.text
