"""Reference ``:identifier``: find resources by the identifier inside their Reference."""

from __future__ import annotations

import httpx


def observation(subject: dict) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": subject}


def test_reference_identifier_finds_logical_references(client: httpx.Client, unique: str) -> None:
    system = f"urn:mrn:{unique}"
    logical = client.post("/Observation", json=observation({"identifier": {"system": system, "value": "7"}})).json()
    patient = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    both = client.post("/Observation", json=observation(
        {"reference": f"Patient/{patient}", "identifier": {"system": system, "value": "8"}})).json()
    client.post("/Observation", json=observation({"identifier": {"system": system, "value": "9"}}))
    found = client.get("/Observation", params={"subject:identifier": f"{system}|7,{system}|8"}).json()
    assert {e["resource"]["id"] for e in found["entry"]} == {logical["id"], both["id"]}


def test_reference_identifier_without_system_matches_value(client: httpx.Client, unique: str) -> None:
    created = client.post("/Observation", json=observation({"identifier": {"system": "urn:x", "value": f"v{unique}"}})).json()
    found = client.get("/Observation", params={"subject:identifier": f"v{unique}"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [created["id"]]
