"""Token ``:in`` / ``:not-in``: membership in a value set known to the server (fhirfus's own
terminology from ``fhirfus/ig/terminology``, or an R4 required-binding value set)."""

from __future__ import annotations

import httpx
from rest_helpers import create, entry_ids

PROCEDURE_CODES = "https://fhirfus.org/fhir/CodeSystem/procedure"
PROCEDURES = "https://fhirfus.org/fhir/ValueSet/procedure"
OBSERVATION_STATUS = "http://hl7.org/fhir/ValueSet/observation-status"


def ids(client: httpx.Client, path: str, **params: str) -> set[str]:
    return set(entry_ids(client, path, **params, _count="100"))


def observation(system: str, code: str, mark: str, status: str = "final") -> dict:
    return {"resourceType": "Observation", "status": status, "code": {"coding": [{"system": system, "code": code}]},
            "identifier": [{"system": mark, "value": code}]}


def test_in_matches_codes_of_the_value_set_and_not_in_the_others(client: httpx.Client, unique: str) -> None:
    mark = f"urn:in:{unique}"
    inside = create(client, observation(PROCEDURE_CODES, "mrgfus-ablation", mark))
    other_code = create(client, observation(PROCEDURE_CODES, "no-such-procedure", mark))
    other_system = create(client, observation("http://loinc.org", "mrgfus-ablation", mark))
    assert ids(client, "/Observation", **{"code:in": PROCEDURES, "identifier": f"{mark}|"}) == {inside}
    assert ids(client, "/Observation", **{"code:not-in": PROCEDURES, "identifier": f"{mark}|"}) \
        == {other_code, other_system}


def test_in_matches_code_elements_without_a_system(client: httpx.Client, unique: str) -> None:
    mark = f"urn:in:{unique}"
    final = create(client, observation("urn:x", "a", mark, status="final"))
    preliminary = create(client, observation("urn:x", "b", mark, status="preliminary"))
    assert ids(client, "/Observation", **{"status:in": OBSERVATION_STATUS, "identifier": f"{mark}|"}) \
        == {final, preliminary}
    assert ids(client, "/Observation", **{"status:not-in": OBSERVATION_STATUS, "identifier": f"{mark}|"}) == set()


def test_an_unknown_value_set_is_a_400_naming_the_parameter(client: httpx.Client) -> None:
    response = client.get("/Observation", params={"code:in": "https://example.org/ValueSet/nope"})
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["code:in"] and "not known" in issue["diagnostics"]


def test_in_is_kept_in_the_self_link(client: httpx.Client) -> None:
    response = client.get("/Procedure", params={"code:in": PROCEDURES})
    assert response.status_code == 200
    self_link = next(link["url"] for link in response.json()["link"] if link["relation"] == "self")
    assert "code%3Ain=" in self_link or "code:in=" in self_link


def test_in_expands_a_value_set_stored_on_the_server(client: httpx.Client, unique: str) -> None:
    mark, system = f"urn:in:{unique}", f"urn:codes:{unique}"
    url = f"https://example.org/fhir/ValueSet/{unique}"
    stored = client.post("/ValueSet", json={
        "resourceType": "ValueSet", "url": url, "status": "active",
        "compose": {"include": [{"system": system, "concept": [{"code": "yes"}]}]}})
    assert stored.status_code == 201, stored.text
    inside = create(client, observation(system, "yes", mark))
    create(client, observation(system, "no", mark))
    assert ids(client, "/Observation", **{"code:in": url, "identifier": f"{mark}|"}) == {inside}


def test_in_with_a_version_takes_that_version_of_a_stored_value_set(client: httpx.Client, unique: str) -> None:
    mark, system = f"urn:in:{unique}", f"urn:codes:{unique}"
    url = f"https://example.org/fhir/ValueSet/{unique}"
    for version, code in (("1", "old"), ("2", "new")):
        response = client.post("/ValueSet", json={
            "resourceType": "ValueSet", "url": url, "version": version, "status": "active",
            "compose": {"include": [{"system": system, "concept": [{"code": code}]}]}})
        assert response.status_code == 201, response.text
    old = create(client, observation(system, "old", mark))
    new = create(client, observation(system, "new", mark))
    assert ids(client, "/Observation", **{"code:in": f"{url}|1", "identifier": f"{mark}|"}) == {old}
    assert ids(client, "/Observation", **{"code:in": url, "identifier": f"{mark}|"}) == {new}  # the newest


def test_in_expands_a_whole_code_system_stored_on_the_server(client: httpx.Client, unique: str) -> None:
    mark, system = f"urn:in:{unique}", f"https://example.org/fhir/CodeSystem/{unique}"
    url = f"https://example.org/fhir/ValueSet/{unique}"
    for resource in (
        {"resourceType": "CodeSystem", "url": system, "status": "active", "content": "complete",
         "concept": [{"code": "yes"}]},
        {"resourceType": "ValueSet", "url": url, "status": "active", "compose": {"include": [{"system": system}]}},
    ):
        assert client.post(f"/{resource['resourceType']}", json=resource).status_code == 201
    inside = create(client, observation(system, "yes", mark))
    outside = create(client, observation(system, "no", mark))  # in the system, not among its concepts
    assert ids(client, "/Observation", **{"code:in": url, "identifier": f"{mark}|"}) == {inside}
    assert ids(client, "/Observation", **{"code:not-in": url, "identifier": f"{mark}|"}) == {outside}
