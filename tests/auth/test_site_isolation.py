"""Site isolation on the side paths: what another site owns behaves exactly as if it did not exist.

Site A's client is the attacker, site B's data the target, on both databases (FHIRFUS_AUTH=smart).
Every test here failed before ownership became a column that tombstones keep and every read,
match and conditional reference went through the caller's visibility.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from auth_helpers import make_client

from fhirfus.store.repository import Store
from tests.domain.test_domain_writes import response_for

SITE = "https://fhirfus.org/fhir/CodeSystem/site"
ASYNC = {"Prefer": "respond-async"}


class World:
    """Two sites with a client each, an admin and an analyst; ``marker`` is in every B resource."""

    def __init__(self, secure_server) -> None:
        store = Store(secure_server.database.engine)
        token_url = secure_server.root + "/auth/token"
        self.base = secure_server.base
        self.suffix = uuid.uuid4().hex[:8]
        self.site_a, self.site_b = f"A{self.suffix}", f"B{self.suffix}"
        self.marker = f"secret-{self.suffix}"
        self.clients = {
            "a": make_client(store, token_url, role="site", site=self.site_a, scope="system/*.cruds"),
            "b": make_client(store, token_url, role="site", site=self.site_b, scope="system/*.cruds"),
            "admin": make_client(store, token_url, role="admin", scope="system/*.cruds"),
            "analyst": make_client(store, token_url, role="analyst", scope="system/*.rs"),
        }
        self.sessions = {name: client.http(self.base) for name, client in self.clients.items()}

    def __getattr__(self, name: str) -> httpx.Client:
        if name in ("a", "b", "admin", "analyst"):
            return self.sessions[name]
        raise AttributeError(name)

    def patient(self, http: httpx.Client, **extra: object) -> dict:
        body = {"resourceType": "Patient", "name": [{"family": self.marker}],
                "identifier": [{"system": f"urn:test:{self.suffix}", "value": uuid.uuid4().hex}], **extra}
        response = http.post("/Patient", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()


@pytest.fixture
def world(secure_server) -> Iterator[World]:
    w = World(secure_server)
    try:
        yield w
    finally:
        w.close()


def assert_as_if_unknown(world: World, method: str, path_of: str, b_id: str, **kwargs: object) -> httpx.Response:
    """Site A's request on B's id answers exactly (status and body, the id aside) as on an id never used."""
    unknown = uuid.uuid4().hex
    on_b = world.a.request(method, path_of.format(id=b_id), **kwargs)
    on_unknown = world.a.request(method, path_of.format(id=unknown), **kwargs)
    assert on_b.status_code == on_unknown.status_code, (on_b.text, on_unknown.text)
    assert on_b.text.replace(b_id, "ID") == on_unknown.text.replace(unknown, "ID")
    assert world.marker not in on_b.text
    return on_b


def delete_b_patient(world: World) -> dict:
    patient = world.patient(world.b)
    assert world.b.put(f"/Patient/{patient['id']}", json={**patient, "active": True}).status_code == 200
    assert world.b.delete(f"/Patient/{patient['id']}").status_code == 200
    return patient


# --- a deleted id stays its site's -------------------------------------------------------------


def test_old_versions_of_another_sites_deleted_resource_are_not_found(world: World) -> None:
    b = delete_b_patient(world)
    for version in ("1", "2", "3"):
        assert_as_if_unknown(world, "GET", "/Patient/{id}/_history/" + version, b["id"])
    assert_as_if_unknown(world, "GET", "/Patient/{id}/_history", b["id"])
    assert_as_if_unknown(world, "GET", "/Patient/{id}", b["id"])
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": "GET", "url": f"Patient/{b['id']}/_history/1"}}]}
    answer = world.a.post("", json=batch)
    assert answer.status_code == 200 and answer.json()["entry"][0]["response"]["status"] == "404"
    assert world.marker not in answer.text


def test_the_owning_site_still_reads_its_deleted_resources_history(world: World) -> None:
    b = delete_b_patient(world)
    assert world.b.get(f"/Patient/{b['id']}").status_code == 410
    assert world.b.get(f"/Patient/{b['id']}/_history/1").json()["name"][0]["family"] == world.marker
    assert world.b.get(f"/Patient/{b['id']}/_history").json()["total"] == 3


def test_another_site_cannot_take_over_a_deleted_id(world: World) -> None:
    b = delete_b_patient(world)
    take_over = {"resourceType": "Patient", "id": b["id"], "name": [{"family": "Intruder"}]}
    answer = assert_as_if_unknown(world, "PUT", "/Patient/{id}", b["id"], json={"resourceType": "Patient"})
    assert answer.status_code == 404
    assert world.a.put(f"/Patient/{b['id']}", json=take_over).status_code == 404
    in_transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": take_over, "request": {"method": "PUT", "url": f"Patient/{b['id']}"}}]}
    assert world.a.post("", json=in_transaction).status_code == 404
    assert world.b.get(f"/Patient/{b['id']}/_history").json()["total"] == 3  # nothing was added
    assert world.b.get(f"/Patient/{b['id']}").status_code == 410
    assert world.marker not in world.a.get("/Patient/_history", params={"_count": "1000"}).text


def test_a_site_client_updates_only_ids_its_site_owns(world: World) -> None:
    """No update-as-create for site clients: a free id and another site's id answer alike."""
    own = world.patient(world.a)
    assert world.a.put(f"/Patient/{own['id']}", json={**own, "active": True}).status_code == 200
    assert world.a.delete(f"/Patient/{own['id']}").status_code == 200
    assert world.a.put(f"/Patient/{own['id']}", json={**own, "active": False}).status_code == 201  # its own tombstone
    free = uuid.uuid4().hex
    assert world.a.put(f"/Patient/{free}", json={"resourceType": "Patient", "id": free}).status_code == 404
    assert world.admin.put(f"/Patient/{free}", json={"resourceType": "Patient", "id": free}).status_code == 201


# --- conditional interactions see only the caller's rows -----------------------------------------


def test_conditional_create_does_not_return_another_sites_match(world: World) -> None:
    b = world.patient(world.b)
    identifier = b["identifier"][0]
    criteria = f"identifier={identifier['system']}|{identifier['value']}"
    answer = world.a.post("/Patient", json={"resourceType": "Patient"}, headers={"If-None-Exist": criteria})
    assert answer.status_code == 201 and answer.json()["id"] != b["id"]
    assert world.marker not in answer.text
    assert [label["code"] for label in answer.json()["meta"]["security"] if label["system"] == SITE] == [world.site_a]


def test_if_none_exist_counts_only_the_callers_rows(world: World) -> None:
    """One A and one B patient match: A gets its own, not a 412 that counts B's."""
    value = uuid.uuid4().hex
    system = f"urn:test:{world.suffix}"
    mine = world.patient(world.a, identifier=[{"system": system, "value": value}])
    world.patient(world.b, identifier=[{"system": system, "value": value}])
    answer = world.a.post("/Patient", json={"resourceType": "Patient"},
                          headers={"If-None-Exist": f"identifier={system}|{value}"})
    assert answer.status_code == 200 and answer.json()["id"] == mine["id"]


def test_conditional_update_delete_and_transaction_put_do_not_reveal_another_sites_match(world: World) -> None:
    b = world.patient(world.b)
    identifier = b["identifier"][0]
    criteria = f"identifier={identifier['system']}|{identifier['value']}"
    update = world.a.put(f"/Patient?{criteria}", json={"resourceType": "Patient", "active": True})
    assert update.status_code == 201 and update.json()["id"] != b["id"] and world.marker not in update.text
    created = update.json()["id"]
    assert world.a.delete(f"/Patient/{created}").status_code == 200
    delete = world.a.delete(f"/Patient?{criteria}")
    assert delete.status_code == 200 and "No resource matched" in delete.text
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "active": False}, "request": {"method": "PUT", "url": f"Patient?{criteria}"}}]}
    answer = world.a.post("", json=transaction)
    assert answer.status_code == 200, answer.text
    assert b["id"] not in answer.text and world.marker not in answer.text
    assert world.b.get(f"/Patient/{b['id']}").json()["meta"]["versionId"] == "1"  # B's patient untouched


def test_transaction_conditional_reference_does_not_resolve_to_another_sites_patient(world: World) -> None:
    b = world.patient(world.b)
    identifier = b["identifier"][0]
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": f"Patient?identifier={identifier['system']}|{identifier['value']}"}},
         "request": {"method": "POST", "url": "Observation"}}]}
    answer = world.a.post("", json=transaction)
    assert answer.status_code == 400 and "matches no resource" in answer.text
    assert b["id"] not in answer.text


def test_chains_and_has_do_not_match_through_another_sites_resources(world: World) -> None:
    b = world.patient(world.b)
    own_obs = world.admin.post("/Observation", json={  # A's observation of B's patient: only an admin can link them
        "resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "meta": {"security": [{"system": SITE, "code": world.site_a}]},
        "subject": {"reference": f"Patient/{b['id']}"}}).json()
    assert world.a.get("/Observation", params={"_id": own_obs["id"], "subject:Patient.family": world.marker}).json()["total"] == 0
    world.b.post("/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": world.marker},
                                       "subject": {"reference": f"Patient/{b['id']}"}})
    assert world.a.get("/Patient", params={"_has:Observation:subject:code:text": world.marker}).json()["total"] == 0


# --- derived data, labels -----------------------------------------------------------------------


def test_score_observations_of_a_sites_response_belong_to_that_site(world: World) -> None:
    patient = world.patient(world.a)
    qr = world.a.post("/QuestionnaireResponse", json=response_for(patient["id"]))
    assert qr.status_code == 201, qr.text
    scores = world.a.get("/Observation", params={"derived-from": f"QuestionnaireResponse/{qr.json()['id']}"}).json()
    assert scores["total"] == 4
    for entry in scores["entry"]:
        assert {"system": SITE, "code": world.site_a} in entry["resource"]["meta"]["security"]
    assert world.b.get("/Observation", params={"derived-from": f"QuestionnaireResponse/{qr.json()['id']}"}).json()["total"] == 0


def test_a_resources_site_cannot_change(world: World) -> None:
    b = world.patient(world.b)
    moved = {**b, "meta": {"security": [{"system": SITE, "code": world.site_a}]}}
    answer = world.admin.put(f"/Patient/{b['id']}", json=moved)
    assert answer.status_code == 422 and "cannot change" in answer.text
    unlabelled = {k: v for k, v in b.items() if k != "meta"}
    kept = world.admin.put(f"/Patient/{b['id']}", json={**unlabelled, "active": True})
    assert kept.status_code == 200 and {"system": SITE, "code": world.site_b} in kept.json()["meta"]["security"]
    assert world.b.get(f"/Patient/{b['id']}").status_code == 200


def test_a_resource_names_at_most_one_site(world: World) -> None:
    two = {"resourceType": "Patient", "meta": {"security": [{"system": SITE, "code": "X"}, {"system": SITE, "code": "Y"}]}}
    answer = world.admin.post("/Patient", json=two)
    assert answer.status_code == 400 and "Patient.meta.security" in answer.text


# --- analysts export cohorts --------------------------------------------------------------------


def test_an_analyst_exports_a_cohort_group_without_reading_the_group(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    patient = world.patient(world.b)
    group = world.admin.post("/Group", json={"resourceType": "Group", "type": "person", "actual": True,
                                             "member": [{"entity": {"reference": f"Patient/{patient['id']}"}}]}).json()
    assert world.analyst.get(f"/Group/{group['id']}").status_code == 403
    kick = world.analyst.get(f"/Group/{group['id']}/$analysis-export", headers=ASYNC)
    assert kick.status_code == 202, kick.text
    world.analyst.delete(kick.headers["Content-Location"])


# --- the audit trail ----------------------------------------------------------------------------


def test_a_write_commits_with_its_audit_event(world: World) -> None:
    patient = world.patient(world.a)
    events = world.admin.get("/AuditEvent", params={"entity": f"Patient/{patient['id']}", "subtype": "update"})
    assert events.json()["total"] == 0
    assert world.a.put(f"/Patient/{patient['id']}", json={**patient, "active": True}).status_code == 200
    # no flush of the batching writer: the write's own transaction stored its event
    events = world.admin.get("/AuditEvent", params={"entity": f"Patient/{patient['id']}", "subtype": "update"}).json()
    assert events["total"] == 1
    event = events["entry"][0]["resource"]
    assert event["agent"][0]["altId"] == world.clients["a"].client_id and event["outcomeDesc"] == "committed"


def test_a_refused_write_leaves_no_committed_audit_event(world: World) -> None:
    b = world.patient(world.b)
    world.a.put(f"/Patient/{b['id']}", json={**b, "active": False})
    events = world.admin.get("/AuditEvent", params={"entity": f"Patient/{b['id']}", "outcome": "0",
                                                    "subtype": "update"}).json()
    assert events["total"] == 0


def test_patch_in_a_batch_is_audited_per_entry(world: World) -> None:
    patient = world.patient(world.a)
    patch = base64.b64encode(json.dumps([{"op": "add", "path": "/active", "value": True}]).encode()).decode()
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": patch},
         "request": {"method": "PATCH", "url": f"Patient/{patient['id']}"}}]}
    assert world.a.post("", json=batch).json()["entry"][0]["response"]["status"] == "200 OK"
    events = world.admin.get("/AuditEvent", params={"entity": f"Patient/{patient['id']}", "subtype": "patch"}).json()
    assert events["total"] == 1


def test_a_site_client_without_a_site_sees_nothing() -> None:
    """Confinement fails closed: a site caller naming no site (a bad token or registry row) sees no row."""
    from fhirfus.auth.access import Access
    from fhirfus.auth.scopes import Grant
    from fhirfus.db.visibility import EVERYTHING
    from fhirfus.errors import Forbidden

    for site in (None, ""):
        caller = Access("c", "site", site, (Grant("*", "cruds"),))
        assert caller.visibility != EVERYTHING and caller.visibility.confined
        with pytest.raises(Forbidden):
            caller.labelled({"resourceType": "Patient"})


def test_an_admin_gives_data_of_no_site_to_a_site_with_its_whole_history(world: World) -> None:
    unlabelled = world.admin.post("/Patient", json={"resourceType": "Patient", "name": [{"family": world.marker}]}).json()
    assert world.a.get(f"/Patient/{unlabelled['id']}").status_code == 404
    claimed = {**unlabelled, "meta": {"security": [{"system": SITE, "code": world.site_a}]}}
    assert world.admin.put(f"/Patient/{unlabelled['id']}", json=claimed).status_code == 200
    assert world.a.get(f"/Patient/{unlabelled['id']}/_history/1").status_code == 200
    assert world.a.get(f"/Patient/{unlabelled['id']}/_history").json()["total"] == 2
    assert world.b.get(f"/Patient/{unlabelled['id']}/_history/1").status_code == 404


def test_a_reference_to_another_sites_resource_is_refused_as_one_to_nothing(world: World) -> None:
    b = world.patient(world.b)
    on_b = world.a.post("/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                              "subject": {"reference": f"Patient/{b['id']}"}})
    unknown = str(uuid.uuid4())
    on_unknown = world.a.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                                    "code": {"text": "x"}, "subject": {"reference": f"Patient/{unknown}"}})
    assert on_b.status_code == on_unknown.status_code == 400
    assert on_b.text.replace(b["id"], "ID") == on_unknown.text.replace(unknown, "ID")


def test_a_cascading_delete_reaches_only_the_callers_site(world: World) -> None:
    b = world.patient(world.b)
    a_label = {"security": [{"system": SITE, "code": world.site_a}]}
    on_a = world.admin.post("/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"text": "x"}, "meta": a_label,
        "subject": {"reference": f"Patient/{b['id']}"}})
    assert on_a.status_code == 201, on_a.text
    answer = world.b.delete(f"/Patient/{b['id']}", params={"_cascade": "delete"})
    assert answer.status_code == 200, answer.text
    assert on_a.json()["id"] not in answer.text
    assert world.a.get(f"/Observation/{on_a.json()['id']}").status_code == 200


def test_terminology_operations_see_only_the_callers_stored_code_systems(world: World) -> None:
    url = f"urn:test:{world.suffix}:cs"
    stored = world.b.post("/CodeSystem", json={"resourceType": "CodeSystem", "url": url, "status": "active",
                                               "content": "complete", "concept": [{"code": "c", "display": world.marker}]})
    assert stored.status_code == 201
    assert world.b.get("/CodeSystem/$lookup", params={"system": url, "code": "c"}).status_code == 200
    on_b = world.a.get("/CodeSystem/$lookup", params={"system": url, "code": "c"})
    unknown = f"urn:test:{uuid.uuid4()}"
    on_unknown = world.a.get("/CodeSystem/$lookup", params={"system": unknown, "code": "c"})
    assert on_b.status_code == on_unknown.status_code == 404
    assert on_b.text.replace(url, "URL") == on_unknown.text.replace(unknown, "URL")
    assert world.marker not in world.a.get("/ValueSet/$expand", params={"url": f"{url}-vs"}).text
