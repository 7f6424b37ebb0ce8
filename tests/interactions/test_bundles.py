"""Batch and transaction Bundles over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import threading

import httpx


def patient(unique: str, n: int = 0) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": f"urn:bundle:{unique}", "value": str(n)}]}


def observation(subject: str, status: str = "final") -> dict:
    return {"resourceType": "Observation", "status": status, "code": {"text": "test"}, "subject": {"reference": subject}}


def transaction(*entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def post(resource: dict, full_url: str | None = None, **request: str) -> dict:
    entry: dict = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def count(client: httpx.Client, query: str) -> int:
    separator = "&" if "?" in query else "?"
    return client.get(f"{query}{separator}_summary=count").json()["total"]


def test_transaction_resolves_urn_uuid_references(client: httpx.Client, unique: str) -> None:
    bundle = transaction(
        post(observation("urn:uuid:aaaaaaaa-0000-0000-0000-000000000001")),
        post(patient(unique), "urn:uuid:aaaaaaaa-0000-0000-0000-000000000001"),
    )
    response = client.post("/", json=bundle)
    assert response.status_code == 200
    result = response.json()
    assert result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created", "201 Created"]
    patient_location = result["entry"][1]["response"]["location"]
    assert result["entry"][0]["resource"]["subject"]["reference"] == "/".join(patient_location.split("/")[:2])


def test_transaction_response_carries_location_etag_last_modified(client: httpx.Client, unique: str) -> None:
    response = client.post("", json=transaction(post(patient(unique)))).json()["entry"][0]["response"]
    assert response["location"].startswith("Patient/") and response["location"].endswith("/_history/1")
    assert response["etag"] == 'W/"1"' and response["lastModified"]


def test_failing_transaction_writes_nothing_and_names_the_entry(client: httpx.Client, server, unique: str) -> None:
    before = server.database.counts()
    bundle = transaction(
        post(patient(unique), "urn:uuid:aaaaaaaa-0000-0000-0000-000000000002"),
        post(observation("urn:uuid:aaaaaaaa-0000-0000-0000-000000000002")),
        post(observation("urn:uuid:aaaaaaaa-0000-0000-0000-000000000002", status="bogus")),
    )
    response = client.post("/", json=bundle)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[2].resource.status"]
    assert server.database.counts() == before


def test_transaction_failing_inside_the_database_rolls_back(client: httpx.Client, server, unique: str) -> None:
    """An error found only during processing (stale ifMatch) undoes the entries already written."""
    existing = client.post("/Patient", json=patient(unique)).json()
    before = server.database.counts()
    bundle = transaction(
        post(patient(unique, 1)),
        {"resource": existing, "request": {"method": "PUT", "url": f"Patient/{existing['id']}", "ifMatch": 'W/"7"'}},
    )
    response = client.post("/", json=bundle)
    assert response.status_code == 412
    assert response.json()["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    assert server.database.counts() == before


def test_transaction_conditional_reference_is_resolved(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique, 5)).json()
    bundle = transaction(post(observation(f"Patient?identifier=urn:bundle:{unique}|5")))
    result = client.post("/", json=bundle).json()
    assert result["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{created['id']}"


def test_conditional_reference_matching_nothing_fails(client: httpx.Client, unique: str) -> None:
    bundle = transaction(post(observation(f"Patient?identifier=urn:bundle:{unique}|404")))
    response = client.post("/", json=bundle)
    assert response.status_code == 400
    assert "matches no resource" in response.json()["issue"][0]["diagnostics"]


def test_unresolvable_urn_uuid_reference_fails(client: httpx.Client) -> None:
    bundle = transaction(post(observation("urn:uuid:aaaaaaaa-0000-0000-0000-00000000dead")))
    assert client.post("/", json=bundle).status_code == 400


def test_if_none_exist_makes_repost_idempotent(client: httpx.Client, unique: str) -> None:
    bundle = transaction(post(patient(unique, 9), ifNoneExist=f"identifier=urn:bundle:{unique}|9"))
    first = client.post("/", json=bundle).json()["entry"][0]["response"]
    second = client.post("/", json=bundle).json()["entry"][0]["response"]
    assert first["status"] == "201 Created" and second["status"] == "200 OK"
    assert first["location"] == second["location"]
    assert count(client, f"/Patient?identifier=urn:bundle:{unique}|9") == 1


def test_processing_order_is_delete_post_put_get(client: httpx.Client, unique: str) -> None:
    doomed = client.post("/Patient", json=patient(unique, 1)).json()
    bundle = transaction(
        {"request": {"method": "GET", "url": f"Patient?identifier=urn:bundle:{unique}|"}},
        {"resource": {**patient(unique, 3), "id": f"put-{unique}"}, "request": {"method": "PUT", "url": f"Patient/put-{unique}"}},
        post(patient(unique, 2)),
        {"request": {"method": "DELETE", "url": f"Patient/{doomed['id']}"}},
    )
    result = client.post("/", json=bundle).json()
    assert [e["response"]["status"] for e in result["entry"]] == ["200 OK", "201 Created", "201 Created", "200 OK"]
    assert client.get(f"/Patient/{doomed['id']}").status_code == 410


def test_two_entries_for_the_same_resource_is_400(client: httpx.Client, unique: str) -> None:
    entry = {"resource": {"resourceType": "Patient", "id": f"dup-{unique}"}, "request": {"method": "PUT", "url": f"Patient/dup-{unique}"}}
    response = client.post("/", json=transaction(entry, entry))
    assert response.status_code == 400
    assert client.get(f"/Patient/dup-{unique}").status_code == 404


def test_conditional_update_entry_creates_then_updates(client: httpx.Client, unique: str) -> None:
    entry = {"resource": {**patient(unique, 4), "gender": "male"},
             "request": {"method": "PUT", "url": f"Patient?identifier=urn:bundle:{unique}|4"}}
    changed = {**entry, "resource": {**entry["resource"], "gender": "female"}}
    first = client.post("/", json=transaction(entry)).json()["entry"][0]["response"]
    second = client.post("/", json=transaction(changed)).json()["entry"][0]["response"]
    assert first["status"] == "201 Created" and second["status"] == "200 OK"
    assert second["location"].split("/")[1] == first["location"].split("/")[1]
    assert second["etag"] == 'W/"2"'


def test_patch_entry_as_binary_json_patch(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique)).json()
    operations = base64.b64encode(json.dumps([{"op": "add", "path": "/active", "value": True}]).encode()).decode()
    entry = {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": operations},
             "request": {"method": "PATCH", "url": f"Patient/{created['id']}"}}
    client.post("/", json=transaction(entry))
    assert client.get(f"/Patient/{created['id']}").json()["active"] is True


def test_batch_entries_succeed_or_fail_independently(client: httpx.Client, unique: str) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        post(patient(unique, 1)),
        post(observation("Patient/x", status="bogus")),
        {"request": {"method": "GET", "url": f"Patient/missing-{unique}"}},
        post(patient(unique, 2)),
    ]}
    response = client.post("/", json=bundle)
    assert response.status_code == 200
    result = response.json()
    assert result["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses[0] == "201 Created" and statuses[3] == "201 Created"
    assert statuses[1].startswith("400") and statuses[2].startswith("404")
    assert result["entry"][1]["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.status"]
    assert count(client, f"/Patient?identifier=urn:bundle:{unique}|") == 2


def test_not_a_bundle_is_400(client: httpx.Client) -> None:
    assert client.post("/", json={"resourceType": "Patient"}).status_code == 400


def test_bundle_of_wrong_type_is_400(client: httpx.Client) -> None:
    response = client.post("/", json={"resourceType": "Bundle", "type": "collection"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Bundle.type"]


def test_conditional_update_at_type_level(client: httpx.Client, unique: str) -> None:
    url = f"/Patient?identifier=urn:bundle:{unique}|7"
    first = client.put(url, json=patient(unique, 7))
    second = client.put(url, json={**patient(unique, 7), "gender": "female"})
    assert first.status_code == 201 and second.status_code == 200
    assert second.json()["id"] == first.json()["id"] and second.json()["meta"]["versionId"] == "2"


def test_conditional_update_with_several_matches_is_412(client: httpx.Client, unique: str) -> None:
    client.post("/Patient", json=patient(unique, 8))
    client.post("/Patient", json=patient(unique, 8))
    response = client.put(f"/Patient?identifier=urn:bundle:{unique}|8", json=patient(unique, 8))
    assert response.status_code == 412


def test_conditional_delete_at_type_level(client: httpx.Client, unique: str) -> None:
    created = client.post("/Patient", json=patient(unique, 6)).json()
    response = client.delete(f"/Patient?identifier=urn:bundle:{unique}|6")
    assert response.status_code == 200
    assert client.get(f"/Patient/{created['id']}").status_code == 410


def test_transaction_is_invisible_to_concurrent_readers_until_commit(client: httpx.Client, server, unique: str) -> None:
    """A failing transaction never shows its early entries to a reader polling meanwhile."""
    seen: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        with server.client() as reader:
            while not stop.is_set():
                seen.append(count(reader, f"/Patient?identifier=urn:bundle:{unique}|"))

    existing = client.post("/Organization", json={"resourceType": "Organization", "name": unique}).json()
    thread = threading.Thread(target=poll)
    thread.start()
    try:
        while not seen:
            stop.wait(0.01)
        entries = [post(patient(unique, n)) for n in range(300)]
        stale = {"resource": existing, "request": {"method": "PUT", "url": f"Organization/{existing['id']}", "ifMatch": 'W/"9"'}}
        assert client.post("/", json=transaction(*entries, stale)).status_code == 412
    finally:
        stop.set()
        thread.join()
    assert seen and set(seen) == {0}
