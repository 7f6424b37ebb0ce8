"""Referential integrity: what a write refers to exists, what others refer to is not deleted.

Over HTTP on both databases (``FHIRFUS_REFERENTIAL_INTEGRITY=on``, the default), and with the
setting off; across sites, another site's resource is as absent as one never written.
"""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest
from auth_helpers import make_client
from conftest import serving
from sqlalchemy import event

from fhirfus.auth.access import SERVER
from fhirfus.interactions import bundles
from fhirfus.settings import Settings
from fhirfus.store.repository import Store


def observation(subject: str, **extra: object) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": subject}, **extra}


def patient(client: httpx.Client) -> str:
    return client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]


@pytest.mark.parametrize("write", ["create", "update", "patch", "conditional-update", "batch", "transaction"])
def test_a_reference_to_a_resource_that_does_not_exist_is_refused_naming_the_element(
    client: httpx.Client, write: str,
) -> None:
    missing = f"Patient/{uuid.uuid4()}"
    existing = client.post("/Observation", json=observation(f"Patient/{patient(client)}")).json()
    body = observation(missing)
    if write == "create":
        answer = client.post("/Observation", json=body)
    elif write == "update":
        answer = client.put(f"/Observation/{existing['id']}", json={**body, "id": existing["id"]})
    elif write == "patch":
        answer = client.patch(f"/Observation/{existing['id']}", json=[
            {"op": "replace", "path": "/subject/reference", "value": missing}],
            headers={"Content-Type": "application/json-patch+json"})
    elif write == "conditional-update":
        answer = client.put("/Observation", params={"identifier": f"urn:x|{uuid.uuid4()}"}, json=body)
    else:
        bundle = {"resourceType": "Bundle", "type": write,
                  "entry": [{"resource": body, "request": {"method": "POST", "url": "Observation"}}]}
        answer = client.post("", json=bundle)
        if write == "batch":
            assert answer.status_code == 200
            answer_entry = answer.json()["entry"][0]["response"]
            assert answer_entry["status"] == "400"
            assert answer_entry["outcome"]["issue"][0]["expression"] == ["Bundle.entry[0].resource.subject"]
            return
    assert answer.status_code == 400, answer.text
    issue = answer.json()["issue"][0]
    assert missing in issue["diagnostics"] and issue["expression"][0].endswith("subject")
    assert client.get(f"/Observation/{existing['id']}").json()["subject"]["reference"] != missing


def test_entries_of_one_transaction_may_refer_to_each_other_in_any_order(client: httpx.Client) -> None:
    pid = str(uuid.uuid4())
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation(f"Patient/{pid}"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Patient", "id": pid}, "request": {"method": "PUT", "url": f"Patient/{pid}"}},
    ]}
    assert client.post("", json=bundle).status_code == 200


def test_a_dangling_reference_beside_references_to_new_entries_is_still_refused(client: httpx.Client) -> None:
    missing = f"Practitioner/{uuid.uuid4()}"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5b1c0c1e-0000-4000-8000-000000000001", "resource": {"resourceType": "Patient"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": observation("urn:uuid:5b1c0c1e-0000-4000-8000-000000000001",
                                 performer=[{"reference": missing}]),
         "request": {"method": "POST", "url": "Observation"}},
    ]}
    answer = client.post("", json=bundle)
    assert answer.status_code == 400, answer.text
    assert answer.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.performer[0]"]


def test_references_to_what_the_transaction_created_are_not_looked_up(database) -> None:
    """The transaction's own new resources are live and the caller's to the end of it: checking
    references to them would ask the database what it was just told."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5b1c0c1e-0000-4000-8000-000000000002", "resource": {"resourceType": "Patient"},
         "request": {"method": "POST", "url": "Patient"}},
        *[{"resource": observation("urn:uuid:5b1c0c1e-0000-4000-8000-000000000002"),
           "request": {"method": "POST", "url": "Observation"}} for _ in range(3)],
    ]}
    statements: list[str] = []
    here = threading.get_ident()  # the session's server shares the engine: its threads' statements are not ours

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        if threading.get_ident() == here:
            statements.append(statement)

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        answer = bundles.process(bundles.Context(Store(database.engine), SERVER, "http://test.local/fhir"), bundle)
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created"] * 4
    assert not [s for s in statements if s.lstrip().upper().startswith("SELECT") and "resources" in s]


def test_absolute_references_under_this_base_are_checked_and_other_servers_are_not(server, client: httpx.Client) -> None:
    assert client.post("/Observation", json=observation(f"{server.base}/Patient/{uuid.uuid4()}")).status_code == 400
    assert client.post("/Observation", json=observation(f"{server.base}/Patient/{patient(client)}")).status_code == 201
    assert client.post("/Observation", json=observation("https://ehr.example.org/fhir/Patient/1")).status_code == 201
    assert client.post("/Observation", json=observation("urn:uuid:4c0c8f49-9b9b-4c7a-9c2e-1f0b0e0a0a0a")).status_code == 201


def test_a_deleted_resource_is_no_target(client: httpx.Client) -> None:
    pid = patient(client)
    assert client.delete(f"/Patient/{pid}").status_code == 200
    assert client.post("/Observation", json=observation(f"Patient/{pid}")).status_code == 400


def test_a_referenced_resource_is_not_deleted_until_its_referrers_are(client: httpx.Client) -> None:
    pid = patient(client)
    obs = client.post("/Observation", json=observation(f"Patient/{pid}")).json()
    refused = client.delete(f"/Patient/{pid}")
    assert refused.status_code == 409, refused.text
    assert f"Observation/{obs['id']}" in refused.json()["issue"][0]["diagnostics"]
    assert client.get(f"/Patient/{pid}").status_code == 200
    both = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": f"Patient/{pid}"}},
        {"request": {"method": "DELETE", "url": f"Observation/{obs['id']}"}}]}
    assert client.post("", json=both).status_code == 200
    assert client.get(f"/Patient/{pid}").status_code == 410


def test_with_the_setting_off_nothing_is_checked(database) -> None:
    settings = Settings(database_url=database.url, auth="off", referential_integrity="off")
    with serving(settings, Store(database.engine)) as (root, _), httpx.Client(base_url=root + "/fhir") as http:
        assert http.post("/Observation", json=observation(f"Patient/{uuid.uuid4()}")).status_code == 201
        pid = http.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
        http.post("/Observation", json=observation(f"Patient/{pid}"))
        assert http.delete(f"/Patient/{pid}").status_code == 200


def test_cascade_delete_removes_the_referrers_transitively_in_one_transaction(client: httpx.Client) -> None:
    pid = patient(client)
    encounter = client.post("/Encounter", json={"resourceType": "Encounter", "status": "finished",
                                                "class": {"code": "AMB"}, "subject": {"reference": f"Patient/{pid}"}}).json()
    obs = client.post("/Observation", json=observation(
        f"Patient/{pid}", encounter={"reference": f"Encounter/{encounter['id']}"})).json()
    on_obs = client.post("/Observation", json=observation(
        f"Patient/{pid}", hasMember=[{"reference": f"Observation/{obs['id']}"}])).json()
    answer = client.delete(f"/Patient/{pid}", params={"_cascade": "delete"})
    assert answer.status_code == 200, answer.text
    message = answer.json()["issue"][0]["diagnostics"]
    for gone in (f"Encounter/{encounter['id']}", f"Observation/{obs['id']}", f"Observation/{on_obs['id']}"):
        assert gone in message
        assert client.get(f"/{gone}").status_code == 410
    assert client.get(f"/Patient/{pid}").status_code == 410


def test_cascade_delete_needs_delete_permission_on_every_type_it_reaches(secure_server) -> None:
    token_url = secure_server.root + "/auth/token"
    store = Store(secure_server.database.engine)
    writer = make_client(store, token_url, role="admin", scope="system/*.cruds")
    patients_only = make_client(store, token_url, role="admin", scope="system/*.crus system/Patient.d")
    with writer.http(secure_server.base) as http, patients_only.http(secure_server.base) as limited:
        pid = patient(http)
        obs = http.post("/Observation", json=observation(f"Patient/{pid}")).json()
        refused = limited.delete(f"/Patient/{pid}", params={"_cascade": "delete"})
        assert refused.status_code == 403, refused.text
        assert http.get(f"/Patient/{pid}").status_code == 200
        assert http.get(f"/Observation/{obs['id']}").status_code == 200


def test_an_unknown_cascade_mode_is_400(client: httpx.Client) -> None:
    pid = patient(client)
    answer = client.delete(f"/Patient/{pid}", params={"_cascade": "yes"})
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["expression"] == ["_cascade"]
    assert client.get(f"/Patient/{pid}").status_code == 200


def test_a_site_client_may_refer_to_its_own_sites_resources_and_not_to_another_sites(secure_server) -> None:
    """The check runs as the writer sees the data: another site's patient is as absent as one never
    written, the writer's own is there (the check's read rides along the create's round trip on
    PostgreSQL: its site filter is the writer's)."""
    token_url = secure_server.root + "/auth/token"
    store = Store(secure_server.database.engine)
    own, other = (f"S{uuid.uuid4().hex[:8]}" for _ in range(2))
    mine = make_client(store, token_url, role="site", site=own, scope="system/*.cruds")
    theirs = make_client(store, token_url, role="site", site=other, scope="system/*.cruds")
    with mine.http(secure_server.base) as http, theirs.http(secure_server.base) as other_http:
        own_patient, other_patient = patient(http), patient(other_http)
        refused = http.post("/Observation", json=observation(f"Patient/{other_patient}"))
        assert refused.status_code == 400, refused.text
        assert refused.json()["issue"][0]["expression"][0].endswith("subject")
        assert f"Patient/{other_patient}" in refused.json()["issue"][0]["diagnostics"]
        accepted = http.post("/Observation", json=observation(f"Patient/{own_patient}"))
        assert accepted.status_code == 201, accepted.text
