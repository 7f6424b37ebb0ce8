"""$validate returns the OperationOutcome a write would give, and writes nothing."""

from __future__ import annotations

import httpx
import pytest


def test_validate_valid_resource_has_no_errors(client: httpx.Client) -> None:
    response = client.post("/Patient/$validate", json={"resourceType": "Patient", "gender": "male"})
    assert response.status_code == 200
    issues = response.json()["issue"]
    assert all(i["severity"] not in ("error", "fatal") for i in issues)


def test_validate_reports_same_issue_as_create(client: httpx.Client, server) -> None:
    bad = {"resourceType": "Patient", "gender": "banana"}
    before = server.database.counts()
    validated = client.post("/Patient/$validate", json=bad).json()
    created = client.post("/Patient", json=bad).json()
    assert validated["issue"] == created["issue"]
    assert server.database.counts() == before


def test_validate_accepts_parameters_wrapper(client: httpx.Client) -> None:
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {"resourceType": "Patient", "gender": "banana"}}]}
    issues = client.post("/Patient/$validate", json=parameters).json()["issue"]
    assert issues[0]["expression"] == ["Patient.gender"]


def test_instance_validate_detects_id_mismatch(client: httpx.Client, unique: str) -> None:
    issues = client.post(f"/Patient/a-{unique}/$validate", json={"resourceType": "Patient", "id": "other"}).json()["issue"]
    assert issues[0]["expression"] == ["Patient.id"]



def test_a_profile_naming_no_element_of_its_type_is_refused_at_that_path_and_not_stored(client: httpx.Client,
                                                                                        unique: str) -> None:
    profile = {"resourceType": "StructureDefinition", "id": f"p-{unique}", "url": f"https://example.org/sd/{unique}",
               "name": "ObservationTest", "status": "draft", "kind": "resource", "abstract": False,
               "type": "Observation", "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Observation",
               "derivation": "constraint", "differential": {"element": [
                   {"id": "Observation.valueQuantity", "path": "Observation.valueQuantity"},
                   {"id": "Observation.valueQuantity", "path": "Observation.valueBla"}]}}
    validated = client.post("/StructureDefinition/$validate", json=profile).json()["issue"]
    assert [i["expression"] for i in validated if i["severity"] == "error"] == [
        ["StructureDefinition.differential.element[1].path"]]
    assert client.put(f"/StructureDefinition/p-{unique}", json=profile).status_code == 400
    assert client.get(f"/StructureDefinition/p-{unique}").status_code == 404
    profile["differential"]["element"].pop()
    assert client.put(f"/StructureDefinition/p-{unique}", json=profile).status_code == 201

# --- system level, mode, profile, warnings ---------------------------------------------------------

BP_PROFILE = "http://hl7.org/fhir/StructureDefinition/bp"
#: Narrative keeps the best-practice warning dom-6 away, so "clean" means clean.
TEXT = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}
CLEAN = {"resourceType": "Patient", "text": TEXT}
WARNED = {**CLEAN, "extension": [{"url": "https://ehr.example/ext/ward", "valueString": "3B"}]}


def issues_of(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"]
    return body["issue"]


def test_system_level_validate_takes_the_type_from_the_resource(client: httpx.Client) -> None:
    bad = issues_of(client.post("/$validate", json={"resourceType": "Observation", "status": "banana", "code": {"text": "x"}}))
    assert [i["expression"] for i in bad if i["severity"] == "error"] == [["Observation.status"]]
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": CLEAN}]}
    assert [i["severity"] for i in issues_of(client.post("/$validate", json=parameters))] == ["information"]


def test_a_clean_resource_gets_one_information_issue(client: httpx.Client) -> None:
    assert [i["severity"] for i in issues_of(client.post("/Patient/$validate", json=CLEAN))] == ["information"]


def test_validate_reports_warnings_that_a_write_lets_pass(client: httpx.Client) -> None:
    found = issues_of(client.post("/Patient/$validate", json=WARNED))
    assert [(i["severity"], i["expression"]) for i in found] == [("warning", ["Patient.extension[0].url"])]
    assert client.post("/Patient", json=WARNED).status_code == 201


def test_profile_parameter_applies_a_profile_the_resource_does_not_claim(client: httpx.Client) -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "bp"}, "text": TEXT}
    plain = issues_of(client.post("/Observation/$validate", json=observation))
    assert [i["severity"] for i in plain] == ["information"]
    profiled = issues_of(client.post("/Observation/$validate", params={"profile": BP_PROFILE}, json=observation))
    assert {"Observation.subject", "Observation.component"} <= {e for i in profiled if i["severity"] == "error"
                                                                 for e in i["expression"]}
    parameters = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": observation}, {"name": "profile", "valueCanonical": BP_PROFILE}]}
    assert issues_of(client.post("/$validate", json=parameters)) == profiled


def test_an_unknown_profile_cannot_be_checked(client: httpx.Client) -> None:
    found = issues_of(client.post("/Patient/$validate", params={"profile": "https://ehr.example/StructureDefinition/x"},
                                  json=CLEAN))
    assert [(i["severity"], i["expression"]) for i in found] == [("error", ["profile"])]


def test_mode_update_at_type_level_uses_the_resources_id(client: httpx.Client, unique: str) -> None:
    found = issues_of(client.post("/Patient/$validate", params={"mode": "update"},
                                  json={**CLEAN, "id": f"u-{unique}"}))
    assert [i["severity"] for i in found] == ["information"]
    assert client.post("/Patient/$validate", params={"mode": "update"}, json={"resourceType": "Patient"}).status_code == 400


def test_an_unknown_mode_is_a_400_naming_mode(client: httpx.Client) -> None:
    response = client.post("/Patient/$validate", params={"mode": "upsert"}, json={"resourceType": "Patient"})
    assert response.status_code == 400 and response.json()["issue"][0]["expression"] == ["mode"]


def test_mode_delete_of_a_missing_resource_is_404(client: httpx.Client, unique: str) -> None:
    assert client.post(f"/Patient/none-{unique}/$validate", params={"mode": "delete"}).status_code == 404


@pytest.mark.parametrize(("path", "params", "body"), [
    ("/$validate", {}, []),
    ("/$validate", {}, "Patient"),
    ("/$validate", {}, {"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "create"}]}),
    ("/$validate", {"mode": "delete"}, {"resourceType": "Patient"}),
    ("/$validate", {}, {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient"}}, {"name": "profile", "valueInteger": 3}]}),
    ("/Patient/$validate", {"mode": "delete"}, {"resourceType": "Patient"}),
    ("/$validate", {}, {"resourceType": "NoSuchType"}),
    ("/$validate", {}, {"resourceType": "Parameters", "parameter": -1}),
])
def test_an_unusable_validate_request_is_a_4xx_outcome(client: httpx.Client, path: str, params: dict, body: object) -> None:
    response = client.post(path, params=params, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
