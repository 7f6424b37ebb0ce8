"""$validate returns the OperationOutcome a write would give, and writes nothing."""

from __future__ import annotations

import httpx


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
