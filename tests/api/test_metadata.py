"""The CapabilityStatement tells what is really implemented, and is itself valid R4."""

from __future__ import annotations

import httpx

from fhirfus.fhir.validation import resource_issues


def test_metadata_is_a_valid_capability_statement(client: httpx.Client) -> None:
    statement = client.get("/metadata").json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert resource_issues(statement) == []


def test_metadata_lists_implemented_interactions(client: httpx.Client) -> None:
    statement = client.get("/metadata").json()
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    codes = {i["code"] for i in patient["interaction"]}
    assert {"read", "vread", "update", "patch", "delete", "create", "history-instance", "history-type"} <= codes
    assert patient["versioning"] == "versioned-update"


def test_metadata_and_base_with_trailing_slash_both_route(client: httpx.Client, server) -> None:
    with httpx.Client(timeout=10) as raw:
        response = raw.post(server.base + "/", json={"resourceType": "Patient"})
    assert response.status_code in (400, 501)
    assert response.json()["resourceType"] == "OperationOutcome"
