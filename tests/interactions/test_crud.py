"""Create, read, vread, update, patch and delete over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def patient(unique: str, **extra: object) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test", "value": unique}],
        "name": [{"family": f"Test{unique}"}],
        "gender": "female",
        **extra,
    }


def test_create_assigns_id_and_version_one(client: httpx.Client, unique: str) -> None:
    response = client.post("/Patient", json=patient(unique), headers=FHIR_JSON)
    assert response.status_code == 201
    body = response.json()
    assert body["id"] and body["meta"]["versionId"] == "1"
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"].endswith(f"/Patient/{body['id']}/_history/1")
    assert response.headers["Last-Modified"].endswith("GMT")
    assert response.headers["Content-Type"].startswith("application/fhir+json")


def test_create_ignores_client_supplied_id(client: httpx.Client, unique: str) -> None:
    response = client.post("/Patient", json=patient(unique, id="my-own-id"))
    assert response.status_code == 201
    assert response.json()["id"] != "my-own-id"


def test_read_returns_what_was_created(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    response = client.get(f"/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["ETag"] == 'W/"1"'


def test_read_unknown_id_is_404_operation_outcome(client: httpx.Client, unique: str) -> None:
    response = client.get(f"/Patient/missing-{unique}")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["code"] == "not-found"


def test_head_read_has_headers_without_body(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    response = client.head(f"/Patient/{created['id']}")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["ETag"] == 'W/"1"'


def test_if_none_match_current_version_is_304(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    response = client.get(f"/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304


def test_update_creates_new_version(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    changed = {**created, "gender": "male"}
    response = client.put(f"/Patient/{created['id']}", json=changed)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert response.json()["gender"] == "male"
    assert response.headers["ETag"] == 'W/"2"'


def test_vread_returns_each_version(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    client.put(f"/Patient/{created['id']}", json={**created, "gender": "male"})
    first = client.get(f"/Patient/{created['id']}/_history/1")
    second = client.get(f"/Patient/{created['id']}/_history/2")
    assert first.json()["gender"] == "female" and second.json()["gender"] == "male"
    assert client.get(f"/Patient/{created['id']}/_history/3").status_code == 404


def test_update_as_create_uses_client_id(client: httpx.Client, unique: str) -> None:
    response = client.put(f"/Patient/pt-{unique}", json=patient(unique, id=f"pt-{unique}"))
    assert response.status_code == 201
    assert response.json()["id"] == f"pt-{unique}"
    assert response.json()["meta"]["versionId"] == "1"


def test_update_with_matching_if_match_succeeds(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    response = client.put(f"/Patient/{created['id']}", json=created, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 200


def test_update_with_stale_if_match_is_412_and_writes_nothing(client: httpx.Client, server, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    client.put(f"/Patient/{created['id']}", json={**created, "active": True})
    before = server.database.counts()
    response = client.put(f"/Patient/{created['id']}", json={**created, "gender": "male"}, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 412
    assert response.json()["issue"][0]["expression"] == ["If-Match"]
    assert server.database.counts() == before
    assert client.get(f"/Patient/{created['id']}").json()["gender"] == "female"


def test_prefer_return_minimal_has_empty_body(client: httpx.Client, unique: str) -> None:
    response = client.post("/Patient", json=patient(unique), headers={"Prefer": "return=minimal"})
    assert response.status_code == 201
    assert response.content == b""
    assert "Location" in response.headers


def test_prefer_return_operation_outcome(client: httpx.Client, unique: str) -> None:
    response = client.post("/Patient", json=patient(unique), headers={"Prefer": "return=OperationOutcome"})
    assert response.status_code == 201
    assert response.json()["resourceType"] == "OperationOutcome"


def test_json_patch_changes_element(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    operations = [{"op": "replace", "path": "/gender", "value": "other"}, {"op": "add", "path": "/active", "value": True}]
    response = client.patch(
        f"/Patient/{created['id']}", json=operations, headers={"Content-Type": "application/json-patch+json"}
    )
    assert response.status_code == 200
    assert response.json()["gender"] == "other" and response.json()["active"] is True
    assert response.json()["meta"]["versionId"] == "2"


def test_json_patch_producing_invalid_resource_is_400_and_writes_nothing(client: httpx.Client, server, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    before = server.database.counts()
    response = client.patch(
        f"/Patient/{created['id']}", json=[{"op": "replace", "path": "/gender", "value": "banana"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.gender"]
    assert server.database.counts() == before


def test_json_patch_with_bad_pointer_is_400(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    response = client.patch(
        f"/Patient/{created['id']}", json=[{"op": "remove", "path": "/nothing/here"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 400


def test_delete_then_read_is_410(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    response = client.delete(f"/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.headers["ETag"] == 'W/"2"'
    gone = client.get(f"/Patient/{created['id']}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"


def test_delete_twice_is_idempotent(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    client.delete(f"/Patient/{created['id']}")
    assert client.delete(f"/Patient/{created['id']}").status_code == 200
    history = client.get(f"/Patient/{created['id']}/_history").json()
    assert history["total"] == 2


def test_update_after_delete_continues_versions(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    client.delete(f"/Patient/{created['id']}")
    response = client.put(f"/Patient/{created['id']}", json=created)
    assert response.status_code == 201
    assert response.json()["meta"]["versionId"] == "3"


def test_delete_unknown_is_404(client: httpx.Client, unique: str) -> None:
    assert client.delete(f"/Patient/never-{unique}").status_code == 404


def test_conditional_create_by_id_returns_existing(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    again = client.post("/Patient", json=patient(unique), headers={"If-None-Exist": f"_id={created['id']}"})
    assert again.status_code == 200
    assert again.json()["id"] == created["id"]


def test_update_with_identical_content_creates_no_new_version(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    again = client.put(f"/Patient/{created['id']}", json=patient(unique, id=created["id"]))
    assert again.status_code == 200
    assert again.json()["meta"]["versionId"] == "1"
    assert client.get(f"/Patient/{created['id']}/_history").json()["total"] == 1
