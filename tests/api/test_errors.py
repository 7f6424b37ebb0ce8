"""Bad input is a 4xx OperationOutcome naming the element, never a 500, and writes nothing."""

from __future__ import annotations

import httpx
import pytest

BAD_CREATES = [
    pytest.param(b"{not json", 400, None, id="malformed-json"),
    pytest.param(b"", 400, None, id="empty-body"),
    pytest.param(b"[1, 2]", 400, None, id="not-an-object"),
    pytest.param(b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}', 400, "resourceType", id="wrong-resource-type"),
    pytest.param(b'{"resourceType": "Patient", "favouriteColour": "blue"}', 400, "Patient.favouriteColour", id="unknown-element"),
    pytest.param(b'{"resourceType": "Patient", "birthDate": "1970-13-45"}', 400, "Patient.birthDate", id="invalid-date"),
    pytest.param(b'{"resourceType": "Patient", "gender": "banana"}', 400, "Patient.gender", id="invalid-required-code"),
    pytest.param(b'{"resourceType": "Patient", "contact": [{"gender": "banana"}]}', 400, "Patient.contact[0].gender", id="invalid-nested-code"),
    pytest.param(b'{"resourceType": "Patient", "name": [{"family": 42}]}', 400, "Patient.name[0].family", id="wrong-datatype"),
    pytest.param(b'{"gender": "male"}', 400, "resourceType", id="missing-resource-type"),
]


@pytest.mark.parametrize(("body", "status", "expression"), BAD_CREATES)
def test_bad_create_is_rejected_without_writing(client: httpx.Client, server, body: bytes, status: int, expression: str | None) -> None:
    before = server.database.counts()
    response = client.post("/Patient", content=body, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == status
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    if expression is not None:
        assert expression in [e for issue in outcome["issue"] for e in issue.get("expression", [])]
    assert server.database.counts() == before


def test_observation_with_bogus_status_is_rejected(client: httpx.Client) -> None:
    response = client.post(
        "/Observation", json={"resourceType": "Observation", "status": "bogus", "code": {"text": "x"}}
    )
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Observation.status"]


def test_missing_required_element_is_named(client: httpx.Client) -> None:
    response = client.post("/Observation", json={"resourceType": "Observation", "status": "final"})
    assert response.status_code == 400
    assert "Observation.code" in response.json()["issue"][0]["expression"]


def test_unknown_resource_type_is_404(client: httpx.Client, server) -> None:
    before = server.database.counts()
    response = client.post("/Banana", json={"resourceType": "Banana"})
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    assert client.get("/Banana/1").status_code == 404
    assert server.database.counts() == before


def test_update_with_id_mismatch_is_400(client: httpx.Client, server, unique: str) -> None:
    before = server.database.counts()
    response = client.put(f"/Patient/a-{unique}", json={"resourceType": "Patient", "id": f"b-{unique}"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.id"]
    assert server.database.counts() == before


def test_update_with_invalid_id_is_400(client: httpx.Client) -> None:
    response = client.put("/Patient/bad_id!", json={"resourceType": "Patient", "id": "bad_id!"})
    assert response.status_code == 400


def test_body_over_size_limit_is_413(client: httpx.Client, server) -> None:
    before = server.database.counts()
    big = b'{"resourceType": "Patient", "name": [{"text": "' + b"x" * (2 * 1024 * 1024) + b'"}]}'
    response = client.post("/Patient", content=big, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 413
    assert response.json()["resourceType"] == "OperationOutcome"
    assert server.database.counts() == before


def test_a_body_neither_json_nor_xml_is_415(client: httpx.Client) -> None:
    response = client.post("/Patient", content=b"resourceType: Patient", headers={"Content-Type": "application/yaml"})
    assert response.status_code == 415
    assert response.json()["resourceType"] == "OperationOutcome"


def test_unknown_route_is_404_operation_outcome(client: httpx.Client) -> None:
    response = client.get("/Patient/1/_history/1/extra/segments")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_wrong_method_is_405_operation_outcome(client: httpx.Client) -> None:
    response = client.patch("/Patient", json=[])
    assert response.status_code == 405
    assert response.json()["resourceType"] == "OperationOutcome"


def test_malformed_if_match_is_400(client: httpx.Client, unique: str) -> None:
    response = client.put(f"/Patient/x-{unique}", json={"resourceType": "Patient"}, headers={"If-Match": "banana"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["If-Match"]


def test_malformed_since_is_400(client: httpx.Client) -> None:
    response = client.get("/Patient/_history", params={"_since": "banana"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["_since"]


def test_statement_over_the_time_limit_is_503_not_500(database) -> None:
    """A request whose SQL runs past FHIRFUS_STATEMENT_TIMEOUT_MS is cancelled and answered 503."""
    import pytest as _pytest
    if database.backend != "postgresql":
        _pytest.skip("the statement time limit is a PostgreSQL setting")
    import uuid as _uuid

    from conftest import run_server

    from fhirfus.db.engine import make_engine
    from fhirfus.settings import Settings
    from fhirfus.store import repository
    from fhirfus.store.repository import Store

    with Store(database.engine).writing() as conn:  # enough rows that reading them takes well over 1 ms
        repository.create_many(conn, [repository.NewResource("Basic", str(_uuid.uuid4()), {
            "resourceType": "Basic", "code": {"text": "x" * 200}}) for _ in range(500)])
    settings = Settings(database_url=database.url, auth="off", statement_timeout_ms=1)
    uv, thread, port = run_server(settings, Store(make_engine(database.url, statement_timeout_ms=1)))
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/fhir/_history", params={"_count": 1000}, timeout=30)
        assert response.status_code == 503
        assert response.json()["issue"][0]["code"] == "too-costly"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
