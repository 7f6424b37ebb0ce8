"""An absolute reference to another server names a resource there, never the one with the same
type and id here: it matches only by its URL, and links nothing on this server."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture
def linked(client: httpx.Client, unique: str) -> dict[str, str]:
    """Our Patient ``p-{unique}``, an Observation referring to it, and one referring to the patient
    with the same id on another server."""
    pid = f"p-{unique}"
    assert client.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid,
                                              "name": [{"family": f"Local{unique}"}]}).status_code == 201
    foreign_url = f"https://ehr.example.org/fhir/Patient/{pid}"

    def observation(reference: str) -> str:
        response = client.post("/Observation", json={
            "resourceType": "Observation", "status": "final", "code": {"text": unique},
            "subject": {"reference": reference}})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    return {"patient": pid, "foreign_url": foreign_url,
            "local": observation(f"Patient/{pid}"), "foreign": observation(foreign_url)}


def ids(bundle: dict, mode: str | None = None) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if mode is None or e["search"]["mode"] == mode}


def test_search_by_local_reference_leaves_out_the_other_servers_patient(client: httpx.Client, linked: dict) -> None:
    found = client.get("/Observation", params={"subject": f"Patient/{linked['patient']}"}).json()
    assert ids(found) == {linked["local"]}


def test_search_by_the_absolute_url_finds_the_foreign_reference(client: httpx.Client, linked: dict) -> None:
    found = client.get("/Observation", params={"subject": linked["foreign_url"]}).json()
    assert ids(found) == {linked["foreign"]}


def test_chain_and_revinclude_follow_local_references_only(client: httpx.Client, linked: dict, unique: str) -> None:
    chained = client.get("/Observation", params={"subject:Patient.family": f"Local{unique}"}).json()
    assert ids(chained) == {linked["local"]}
    patient = client.get("/Patient", params={"_id": linked["patient"], "_revinclude": "Observation:subject"}).json()
    assert ids(patient, "include") == {linked["local"]}


def test_include_does_not_pull_our_patient_for_a_foreign_reference(client: httpx.Client, linked: dict) -> None:
    found = client.get("/Observation", params={"_id": linked["foreign"], "_include": "Observation:subject"}).json()
    assert ids(found) == {linked["foreign"]}


def test_everything_leaves_out_resources_of_another_servers_patient(client: httpx.Client, linked: dict) -> None:
    everything = client.get(f"/Patient/{linked['patient']}/$everything").json()
    assert linked["local"] in ids(everything) and linked["foreign"] not in ids(everything)
