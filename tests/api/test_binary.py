"""Binary per R4 (binary.html#rest): native content in and out, and access by its securityContext.

Plain httpx against a real server on SQLite and PostgreSQL; the securityContext tests run with
SMART authentication on (two sites, narrow scopes).
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from auth_helpers import make_client

from fhirfus.store.repository import Store

SITE = "https://fhirfus.org/fhir/CodeSystem/site"


def upload(client: httpx.Client, data: bytes, content_type: str, **headers: str) -> httpx.Response:
    return client.post("/Binary", content=data, headers={"Content-Type": content_type, **headers})


def test_a_native_upload_is_stored_as_a_binary_resource(client: httpx.Client) -> None:
    data = os.urandom(300)
    response = upload(client, data, "image/png")
    assert response.status_code == 201, response.text
    binary = response.json()
    assert binary["resourceType"] == "Binary"
    assert binary["contentType"] == "image/png"
    assert base64.b64decode(binary["data"]) == data
    assert response.headers["Location"].endswith(f"/Binary/{binary['id']}/_history/1")


def test_a_read_without_a_fhir_accept_answers_the_bytes_with_their_content_type(client: httpx.Client) -> None:
    data = os.urandom(1000)
    binary = upload(client, data, "application/pdf").json()
    for accept in (None, "*/*", "application/pdf", "application/*"):
        answer = client.get(f"/Binary/{binary['id']}", headers={"Accept": accept} if accept else {})
        assert answer.status_code == 200, (accept, answer.text)
        assert answer.content == data
        assert answer.headers["content-type"] == "application/pdf"
        assert answer.headers["etag"] == 'W/"1"'
        assert "last-modified" in answer.headers


def test_a_read_asking_for_fhir_answers_the_binary_resource(client: httpx.Client) -> None:
    binary = upload(client, b"hello", "text/plain").json()
    path = f"/Binary/{binary['id']}"
    for request in ({"headers": {"Accept": "application/fhir+json"}}, {"params": {"_format": "json"}},
                    {"headers": {"Accept": "application/fhir+json, */*; q=0.1"}}):  # Medplum's default Accept
        answer = client.get(path, **request)  # type: ignore[arg-type]
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/fhir+json")
        assert answer.json()["data"] == base64.b64encode(b"hello").decode()


def test_the_content_type_is_kept_with_its_parameters(client: httpx.Client) -> None:
    text = "Grüße, Dystonie".encode()
    binary = upload(client, text, "text/plain; charset=utf-8").json()
    assert binary["contentType"] == "text/plain; charset=utf-8"
    answer = client.get(f"/Binary/{binary['id']}", headers={"Accept": "text/plain"})
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.text == "Grüße, Dystonie"


def test_an_accept_that_allows_neither_the_content_nor_fhir_is_406(client: httpx.Client) -> None:
    binary = upload(client, b"\x89PNG", "image/png").json()
    answer = client.get(f"/Binary/{binary['id']}", headers={"Accept": "text/csv"})
    assert answer.status_code == 406
    assert answer.json()["issue"][0]["expression"] == ["Accept"]


def test_head_answers_the_content_headers_without_a_body(client: httpx.Client) -> None:
    binary = upload(client, b"0123456789", "application/octet-stream").json()
    answer = client.head(f"/Binary/{binary['id']}")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["content-length"] == "10"
    assert answer.content == b""


def test_put_replaces_the_content_and_vread_answers_each_versions_bytes(client: httpx.Client, unique: str) -> None:
    path = f"/Binary/bin-{unique}"
    first = client.put(path, content=b"version one", headers={"Content-Type": "text/plain"})
    assert first.status_code == 201, first.text
    second = client.put(path, content=b"<p>version two</p>", headers={"Content-Type": "text/html"})
    assert second.status_code == 200
    assert second.json()["meta"]["versionId"] == "2"
    assert client.get(path).content == b"<p>version two</p>"
    old = client.get(f"{path}/_history/1")
    assert (old.status_code, old.content, old.headers["content-type"]) == (200, b"version one", "text/plain")
    assert client.get(f"{path}/_history/1", params={"_format": "json"}).json()["contentType"] == "text/plain"


def test_an_empty_upload_is_a_binary_without_data(client: httpx.Client) -> None:
    binary = upload(client, b"", "application/octet-stream").json()
    assert "data" not in binary
    answer = client.get(f"/Binary/{binary['id']}")
    assert (answer.status_code, answer.content) == (200, b"")


def test_the_security_context_header_becomes_the_security_context(client: httpx.Client) -> None:
    patient = client.post("/Patient", json={"resourceType": "Patient"}).json()
    binary = upload(client, b"scan", "image/jpeg", **{"X-Security-Context": f"Patient/{patient['id']}"}).json()
    assert binary["securityContext"] == {"reference": f"Patient/{patient['id']}"}
    answer = client.get(f"/Binary/{binary['id']}")
    assert answer.headers["x-security-context"] == f"Patient/{patient['id']}"


def test_a_security_context_naming_nothing_is_refused_and_nothing_is_written(client: httpx.Client, server) -> None:
    before = server.database.counts()
    answer = upload(client, b"scan", "image/jpeg", **{"X-Security-Context": f"Patient/{uuid.uuid4()}"})
    assert answer.status_code == 400
    assert "Binary.securityContext" in answer.json()["issue"][0]["expression"][0]
    assert server.database.counts() == before


def test_an_invalid_content_type_header_is_refused_naming_the_element(client: httpx.Client, server) -> None:
    before = server.database.counts()
    answer = upload(client, b"x", "text/plain;  charset=utf-8")  # a code has no double space
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["expression"] == ["Binary.contentType"]
    assert server.database.counts() == before


@pytest.mark.parametrize("content_type", ["a", "*/*", "image/*", "image/png;;", "text/plain; x"])
def test_a_content_type_that_is_not_a_media_type_is_refused(client: httpx.Client, server, content_type: str) -> None:
    before = server.database.counts()
    answer = upload(client, b"x", content_type)
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["expression"] == ["Content-Type"]
    assert server.database.counts() == before


@pytest.mark.parametrize("context", ["not a reference", "Patient/", "Patient/a b", "Foo/1", "Patient/%00", "#x",
                                     "Patient/" + "a" * 65, "urn:uuid:1"])
def test_a_security_context_header_that_is_not_a_literal_reference_is_refused(
        client: httpx.Client, server, context: str) -> None:
    before = server.database.counts()
    answer = upload(client, b"x", "text/plain", **{"X-Security-Context": context})
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["expression"] == ["X-Security-Context"]
    assert server.database.counts() == before


def test_a_security_context_on_another_server_is_kept_as_it_is(client: httpx.Client) -> None:
    binary = upload(client, b"x", "text/plain", **{"X-Security-Context": "https://ehr.example/fhir/Patient/1"}).json()
    assert binary["securityContext"] == {"reference": "https://ehr.example/fhir/Patient/1"}


def test_a_binary_of_a_json_type_is_answered_natively_when_asked_for_exactly(client: httpx.Client) -> None:
    binary = upload(client, b'{"@context": "x"}', "application/ld+json").json()
    path = f"/Binary/{binary['id']}"
    assert client.get(path, headers={"Accept": "application/ld+json"}).content == b'{"@context": "x"}'
    assert client.get(path, headers={"Accept": "application/json"}).json()["resourceType"] == "Binary"
    preferred = client.get(path, headers={"Accept": "application/fhir+json;q=0.5, application/ld+json"})
    assert preferred.headers["content-type"] == "application/ld+json"


def test_the_body_limit_applies_to_native_uploads(client: httpx.Client, server) -> None:
    before = server.database.counts()
    answer = upload(client, b"\0" * (1024 * 1024 + 1), "application/octet-stream")  # the test server's limit is 1 MiB
    assert answer.status_code == 413
    assert server.database.counts() == before


def test_fhir_xml_is_not_taken_for_content(client: httpx.Client) -> None:
    answer = upload(client, b"<Binary xmlns='http://hl7.org/fhir'><contentType value='text/plain'/></Binary>",
                    "application/fhir+xml")
    assert answer.status_code == 201, answer.text
    assert answer.json()["contentType"] == "text/plain" and "data" not in answer.json()


def test_a_binary_resource_posted_as_fhir_json_is_still_a_resource(client: httpx.Client) -> None:
    data = base64.b64encode(b"as json").decode()
    created = client.post("/Binary", json={"resourceType": "Binary", "contentType": "text/plain", "data": data})
    assert created.status_code == 201
    assert client.get(f"/Binary/{created.json()['id']}").content == b"as json"


def test_other_types_are_not_uploaded_natively(client: httpx.Client) -> None:
    answer = client.post("/Patient", content=b"hello", headers={"Content-Type": "text/plain"})
    assert answer.status_code == 415


# --- securityContext, with authentication on -------------------------------------------------------


class Sites:
    """Site A and B clients with every scope, a site A client that may read Binary but not Patient, an admin."""

    def __init__(self, secure_server) -> None:
        store = Store(secure_server.database.engine)
        token_url = secure_server.root + "/auth/token"
        suffix = uuid.uuid4().hex[:8]
        self.site_a, self.site_b = f"A{suffix}", f"B{suffix}"
        clients = {
            "a": make_client(store, token_url, role="site", site=self.site_a, scope="system/*.cruds"),
            "a_binary_only": make_client(store, token_url, role="site", site=self.site_a, scope="system/Binary.cruds"),
            "b": make_client(store, token_url, role="site", site=self.site_b, scope="system/*.cruds"),
            "admin": make_client(store, token_url, role="admin", scope="system/*.cruds"),
        }
        self.client_ids = {name: client.client_id for name, client in clients.items()}
        self.http = {name: client.http(secure_server.base) for name, client in clients.items()}

    def patient(self, name: str) -> str:
        response = self.http[name].post("/Patient", json={"resourceType": "Patient"})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


@pytest.fixture
def sites(secure_server) -> Iterator[Sites]:
    world = Sites(secure_server)
    yield world
    for http in world.http.values():
        http.close()


def test_a_site_reads_its_own_binary_with_its_security_context(sites: Sites) -> None:
    patient = sites.patient("a")
    created = upload(sites.http["a"], b"mri", "image/png", **{"X-Security-Context": f"Patient/{patient}"})
    assert created.status_code == 201, created.text
    assert {"system": SITE, "code": sites.site_a} in created.json()["meta"]["security"]
    assert sites.http["a"].get(f"/Binary/{created.json()['id']}").content == b"mri"


def test_another_site_cannot_tell_a_binary_from_one_never_written(sites: Sites) -> None:
    binary = upload(sites.http["b"], b"secret scan of B", "image/png").json()
    unknown = uuid.uuid4().hex
    on_b = sites.http["a"].get(f"/Binary/{binary['id']}")
    on_unknown = sites.http["a"].get(f"/Binary/{unknown}")
    assert on_b.status_code == on_unknown.status_code == 404
    assert on_b.text.replace(binary["id"], "ID") == on_unknown.text.replace(unknown, "ID")
    assert sites.http["a"].get(f"/Binary/{binary['id']}/_history/1").status_code == 404


def test_a_binary_whose_security_context_the_caller_cannot_see_answers_as_never_written(sites: Sites) -> None:
    b_patient = sites.patient("b")
    # an admin files a Binary under site A that names site B's patient as its security context
    created = sites.http["admin"].post("/Binary", json={
        "resourceType": "Binary", "contentType": "text/plain", "data": base64.b64encode(b"B's report").decode(),
        "securityContext": {"reference": f"Patient/{b_patient}"},
        "meta": {"security": [{"system": SITE, "code": sites.site_a}]}})
    assert created.status_code == 201, created.text
    binary_id = created.json()["id"]
    unknown = uuid.uuid4().hex
    for suffix in ("", "/_history/1"):
        on_binary = sites.http["a"].get(f"/Binary/{binary_id}{suffix}", params={"_format": "json"})
        on_unknown = sites.http["a"].get(f"/Binary/{unknown}{suffix}", params={"_format": "json"})
        assert on_binary.status_code == 404, on_binary.text
        assert on_binary.text.replace(binary_id, "ID") == on_unknown.text.replace(unknown, "ID")
        assert sites.http["a"].get(f"/Binary/{binary_id}{suffix}").status_code == 404  # native content too
    assert sites.http["b"].get(f"/Binary/{binary_id}").status_code == 404  # the Binary itself is A's
    assert sites.http["admin"].get(f"/Binary/{binary_id}").content == b"B's report"


def test_reading_a_binary_needs_the_read_scope_of_its_security_context(sites: Sites) -> None:
    patient = sites.patient("a")
    binary = upload(sites.http["a"], b"mri", "image/png", **{"X-Security-Context": f"Patient/{patient}"}).json()
    plain = upload(sites.http["a_binary_only"], b"no context", "text/plain").json()
    refused = sites.http["a_binary_only"].get(f"/Binary/{binary['id']}")
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["expression"] == ["Patient"]
    assert sites.http["a_binary_only"].get(f"/Binary/{plain['id']}").content == b"no context"


def test_a_batch_read_of_a_binary_honours_its_security_context(sites: Sites) -> None:
    patient = sites.patient("a")
    binary = upload(sites.http["a"], b"mri", "image/png", **{"X-Security-Context": f"Patient/{patient}"}).json()
    batch = sites.http["a_binary_only"].post("", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Binary/{binary['id']}"}}]})
    assert batch.status_code == 200, batch.text
    assert batch.json()["entry"][0]["response"]["status"].startswith("403")


def test_searches_and_histories_leave_out_binaries_whose_security_context_the_caller_cannot_read(sites: Sites) -> None:
    patient = sites.patient("a")
    guarded = upload(sites.http["a"], b"mri", "image/png", **{"X-Security-Context": f"Patient/{patient}"}).json()
    plain = upload(sites.http["a"], b"leaflet", "text/plain").json()
    ids = f"{guarded['id']},{plain['id']}"

    def found(name: str, path: str, **params: str) -> set[str]:
        answer = sites.http[name].get(path, params=params)
        assert answer.status_code == 200, answer.text
        return {e["resource"]["id"] for e in answer.json().get("entry", []) if "resource" in e}

    assert found("a", "/Binary", _id=ids) == {guarded["id"], plain["id"]}
    assert found("a_binary_only", "/Binary", _id=ids) == {plain["id"]}
    assert guarded["id"] in found("a", f"/Binary/{guarded['id']}/_history")
    assert found("a_binary_only", f"/Binary/{guarded['id']}/_history") == set()
    assert guarded["id"] not in found("a_binary_only", "/Binary/_history", _count="1000")


def test_a_native_upload_commits_with_its_audit_event(sites: Sites) -> None:
    query = {"altid": sites.client_ids["a"], "subtype": "create", "_summary": "count"}
    before = sites.http["admin"].get("/AuditEvent", params=query).json()["total"]
    assert upload(sites.http["a"], b"audited", "application/pdf").status_code == 201
    # no flush of the batching writer: the write's own transaction stored its event
    assert sites.http["admin"].get("/AuditEvent", params=query).json()["total"] == before + 1


def test_a_native_put_cannot_reach_another_sites_binary(sites: Sites) -> None:
    b_binary = upload(sites.http["b"], b"B's original", "text/plain").json()
    path = f"/Binary/{b_binary['id']}"
    on_b = sites.http["a"].put(path, content=b"overwritten by A", headers={"Content-Type": "text/plain"})
    unknown = uuid.uuid4().hex
    on_unknown = sites.http["a"].put(f"/Binary/{unknown}", content=b"x", headers={"Content-Type": "text/plain"})
    assert on_b.status_code == on_unknown.status_code == 404
    assert on_b.text.replace(b_binary["id"], "ID") == on_unknown.text.replace(unknown, "ID")
    assert sites.http["b"].get(path).content == b"B's original"


def test_a_sites_export_leaves_out_a_binary_whose_security_context_it_cannot_see(sites: Sites) -> None:
    b_patient = sites.patient("b")
    filed = sites.http["admin"].post("/Binary", json={
        "resourceType": "Binary", "contentType": "text/plain", "data": base64.b64encode(b"B's report").decode(),
        "securityContext": {"reference": f"Patient/{b_patient}"},
        "meta": {"security": [{"system": SITE, "code": sites.site_a}]}}).json()
    a_patient = sites.patient("a")
    own = upload(sites.http["a"], b"A's scan", "image/png", **{"X-Security-Context": f"Patient/{a_patient}"}).json()
    kicked = sites.http["a"].get("/$export", params={"_type": "Binary"}, headers={"Prefer": "respond-async"})
    assert kicked.status_code == 202, kicked.text
    deadline = time.monotonic() + 60
    while (status := sites.http["a"].get(kicked.headers["Content-Location"])).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert status.status_code == 200, status.text
    exported = set()
    for output in status.json()["output"]:
        lines = sites.http["a"].get(output["url"]).text.splitlines()
        exported |= {json.loads(line)["id"] for line in lines}
    assert own["id"] in exported
    assert filed["id"] not in exported
