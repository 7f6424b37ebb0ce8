"""``identifier:of-type=type-system|type-code|value``: an identifier of that type with that value."""

from __future__ import annotations

import httpx

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def patient(client: httpx.Client, *identifiers: dict) -> str:
    response = client.post("/Patient", json={"resourceType": "Patient", "identifier": list(identifiers)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def typed(code: str, value: str, system: str = "urn:hospital") -> dict:
    return {"type": {"coding": [{"system": V2, "code": code}]}, "system": system, "value": value}


def ids(client: httpx.Client, value: str) -> list[str]:
    response = client.get("/Patient", params={"identifier:of-type": value})
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", [])]


def test_of_type_matches_the_type_and_the_value_together(client: httpx.Client, unique: str) -> None:
    mrn = patient(client, typed("MR", f"{unique}-1"), typed("SS", f"{unique}-2"))
    assert ids(client, f"{V2}|MR|{unique}-1") == [mrn]
    assert ids(client, f"{V2}|SS|{unique}-2") == [mrn]
    assert ids(client, f"{V2}|MR|{unique}-2") == []  # the value belongs to another type
    assert ids(client, f"urn:other|MR|{unique}-1") == []


def test_of_type_needs_all_three_parts(client: httpx.Client) -> None:
    response = client.get("/Patient", params={"identifier:of-type": f"{V2}|MR"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["identifier:of-type"]


def test_of_type_value_may_contain_a_bar(client: httpx.Client, unique: str) -> None:
    odd = patient(client, typed("MR", f"{unique}|a"))
    assert ids(client, f"{V2}|MR|{unique}|a") == [odd]


def test_of_type_on_a_parameter_that_is_not_an_identifier_is_refused_under_strict_handling(client: httpx.Client) -> None:
    response = client.get("/Patient", params={"gender:of-type": f"{V2}|MR|1"}, headers={"Prefer": "handling=strict"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["gender:of-type"]
