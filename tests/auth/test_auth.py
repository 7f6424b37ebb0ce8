"""SMART backend services, scopes, site isolation, analysts and the audit trail (FHIRFUS_AUTH=smart)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from auth_helpers import make_client

from fhirfus.store.repository import Store

SITE = "https://fhirfus.org/fhir/CodeSystem/site"


@pytest.fixture(scope="session")
def token_url(secure_server) -> str:
    return secure_server.root + "/auth/token"


@pytest.fixture(scope="session")
def store(secure_server) -> Store:
    return Store(secure_server.database.engine)


@pytest.fixture(scope="session")
def sites(secure_server, store, token_url) -> dict:
    """Two site clients (A, B), an admin, an analyst; each site owns a patient with an observation."""
    suffix = uuid.uuid4().hex[:6]
    clients = {
        "a": make_client(store, token_url, role="site", site=f"A{suffix}", scope="system/*.cruds"),
        "b": make_client(store, token_url, role="site", site=f"B{suffix}", scope="system/*.cruds", algorithm="ES384"),
        "admin": make_client(store, token_url, role="admin", scope="system/*.cruds"),
        "analyst": make_client(store, token_url, role="analyst", scope="system/*.rs"),
    }
    data = {}
    for name in ("a", "b"):
        with clients[name].http(secure_server.base) as http:
            patient = http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": f"Fam{name}{suffix}"}]}).json()
            obs = http.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                                  "code": {"text": f"code{suffix}"},
                                                  "subject": {"reference": f"Patient/{patient['id']}"}}).json()
            data[name] = {"patient": patient, "observation": obs}
    return {"clients": clients, "data": data, "suffix": suffix}


def test_metadata_and_smart_configuration_are_public(secure_server) -> None:
    assert httpx.get(secure_server.base + "/metadata").status_code == 200
    config = httpx.get(secure_server.base + "/.well-known/smart-configuration").json()
    assert config["token_endpoint"].endswith("/auth/token")
    assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]


def test_request_without_token_is_401(secure_server) -> None:
    response = httpx.get(secure_server.base + "/Patient")
    assert response.status_code == 401
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_invalid_token_is_401(secure_server) -> None:
    response = httpx.get(secure_server.base + "/Patient", headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401


@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
def test_signed_assertion_gets_a_token(store, token_url, algorithm: str) -> None:
    client = make_client(store, token_url, role="admin", scope="system/*.rs", algorithm=algorithm)
    response = client.token_request()
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["scope"] == "system/*.rs" and body["expires_in"] <= 300


def test_reused_jti_is_refused(store, token_url) -> None:
    client = make_client(store, token_url, role="admin", scope="system/*.rs")
    assertion = client.assertion()
    assert client.token_request(assertion).status_code == 200
    replay = client.token_request(assertion)
    assert replay.status_code == 401 and "replay" in replay.json()["error_description"]


def test_bad_signature_is_refused(store, token_url) -> None:
    client = make_client(store, token_url, role="admin", scope="system/*.rs")
    other = make_client(store, token_url, role="admin", scope="system/*.rs")
    forged = other.assertion(iss=client.client_id, sub=client.client_id)
    assert client.token_request(forged).status_code == 401


def test_wrong_audience_is_refused(store, token_url) -> None:
    client = make_client(store, token_url, role="admin", scope="system/*.rs")
    response = client.token_request(client.assertion(aud="https://elsewhere.example/token"))
    assert response.status_code == 401 and "aud" in response.json()["error_description"]


def test_expiry_more_than_five_minutes_ahead_is_refused(store, token_url) -> None:
    client = make_client(store, token_url, role="admin", scope="system/*.rs")
    response = client.token_request(client.assertion(exp=int(time.time()) + 3600))
    assert response.status_code == 401 and "5 minutes" in response.json()["error_description"]


def test_scope_beyond_registration_is_refused(store, token_url) -> None:
    client = make_client(store, token_url, role="site", site="X", scope="system/Observation.rs")
    response = client.token_request(scope="system/*.cruds")
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


def test_v2_scope_limits_interactions_with_403(secure_server, store, token_url) -> None:
    client = make_client(store, token_url, role="site", site="S2", scope="system/Observation.rs")
    with client.http(secure_server.base) as http:
        assert http.get("/Observation", params={"_count": 1}).status_code == 200
        denied = http.post("/Patient", json={"resourceType": "Patient"})
        assert denied.status_code == 403 and denied.json()["resourceType"] == "OperationOutcome"
        assert http.get("/Patient").status_code == 403


def test_v1_read_scope_allows_reads_only(secure_server, store, token_url) -> None:
    client = make_client(store, token_url, role="admin", scope="system/*.read")
    with client.http(secure_server.base) as http:
        assert http.get("/Patient", params={"_count": 1}).status_code == 200
        assert http.post("/Patient", json={"resourceType": "Patient"}).status_code == 403


def test_site_writes_are_labelled_with_the_site(sites) -> None:
    patient = sites["data"]["a"]["patient"]
    assert {"system": SITE, "code": f"A{sites['suffix']}"} in patient["meta"]["security"]


def _b(sites, secure_server) -> httpx.Client:
    return sites["clients"]["b"].http(secure_server.base)


def test_site_cannot_read_another_sites_resource(sites, secure_server) -> None:
    a_patient = sites["data"]["a"]["patient"]["id"]
    with _b(sites, secure_server) as http:
        assert http.get(f"/Patient/{a_patient}").status_code == 404
        assert http.get(f"/Patient/{a_patient}/_history/1").status_code == 404
        assert http.get(f"/Patient/{a_patient}/_history").status_code == 404
        assert http.get(f"/Patient/{a_patient}/$everything").status_code == 404


def test_site_search_sees_only_its_site(sites, secure_server) -> None:
    suffix = sites["suffix"]
    with _b(sites, secure_server) as http:
        found = http.get("/Patient", params={"family": "Fam"}).json()
        families = {e["resource"]["name"][0]["family"] for e in found.get("entry", [])}
        assert f"Famb{suffix}" in families and f"Fama{suffix}" not in families


def test_site_cannot_reach_other_site_through_include_revinclude_chain_or_has(sites, secure_server) -> None:
    suffix = sites["suffix"]
    a_patient = sites["data"]["a"]["patient"]["id"]
    with _b(sites, secure_server) as http:
        chained = http.get("/Observation", params={"subject:Patient.name": f"Fama{suffix}"}).json()
        assert chained["total"] == 0
        reverse = http.get("/Patient", params={"_has:Observation:subject:code:text": f"code{suffix}"}).json()
        assert all(e["resource"]["id"] != a_patient for e in reverse.get("entry", []))
        own = http.get("/Observation", params={"code:text": f"code{suffix}", "_include": "Observation:subject",
                                               "_revinclude": "Provenance:target"}).json()
        ids = {e["resource"]["id"] for e in own.get("entry", [])}
        assert a_patient not in ids and sites["data"]["a"]["observation"]["id"] not in ids


def test_site_history_and_everything_stay_within_the_site(sites, secure_server) -> None:
    b_patient = sites["data"]["b"]["patient"]["id"]
    with _b(sites, secure_server) as http:
        history = http.get("/Patient/_history", params={"_count": 200}).json()
        labels = [e["resource"]["meta"].get("security", []) for e in history["entry"] if "resource" in e]
        assert all({"system": SITE, "code": f"B{sites['suffix']}"} in label for label in labels)
        everything = http.get(f"/Patient/{b_patient}/$everything").json()
        assert {e["resource"]["id"] for e in everything["entry"]} == {
            b_patient, sites["data"]["b"]["observation"]["id"]}


def test_site_cannot_update_another_sites_resource(sites, secure_server) -> None:
    a_patient = sites["data"]["a"]["patient"]
    with _b(sites, secure_server) as http:
        response = http.put(f"/Patient/{a_patient['id']}", json={**a_patient, "gender": "male"})
        assert response.status_code == 403
        assert http.delete(f"/Patient/{a_patient['id']}").status_code == 404


def test_admin_sees_every_site(sites, secure_server) -> None:
    suffix = sites["suffix"]
    with sites["clients"]["admin"].http(secure_server.base) as http:
        found = http.get("/Patient", params={"family": "Fam", "_count": 200}).json()
        families = {e["resource"]["name"][0]["family"] for e in found.get("entry", [])}
        assert {f"Fama{suffix}", f"Famb{suffix}"} <= families


def test_analyst_gets_no_identifiable_resource(sites, secure_server) -> None:
    a_patient = sites["data"]["a"]["patient"]["id"]
    with sites["clients"]["analyst"].http(secure_server.base) as http:
        assert http.get("/Patient").status_code == 403
        assert http.get(f"/Patient/{a_patient}").status_code == 403
        assert http.get("/Observation").status_code == 403
        assert http.post("/", json={"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": f"Patient/{a_patient}"}}]}).json()["entry"][0]["response"]["status"].startswith("403")


def test_every_attempt_leaves_an_audit_event(sites, secure_server) -> None:
    a_patient = sites["data"]["a"]["patient"]["id"]
    with _b(sites, secure_server) as http:
        http.get(f"/Patient/{a_patient}")
    httpx.get(secure_server.base + "/Patient")  # no token at all
    secure_server.app.state.audit.flush()
    b_id = sites["clients"]["b"].client_id
    with sites["clients"]["admin"].http(secure_server.base) as http:
        events = http.get("/AuditEvent", params={"altid": b_id, "_count": 200}).json()
        refused = [e["resource"] for e in events["entry"] if e["resource"]["outcomeDesc"] == "HTTP 404"]
        assert any(entity.get("what", {}).get("reference") == f"Patient/{a_patient}"
                   for event in refused for entity in event["entity"])
        anonymous = http.get("/AuditEvent", params={"altid": "anonymous", "outcome": "4"}).json()
        assert anonymous["total"] >= 1
    with _b(sites, secure_server) as http:
        assert http.get("/AuditEvent").status_code == 403


def test_rate_limit_answers_429_with_retry_after(database) -> None:
    from conftest import run_server

    from fhirfus.settings import Settings

    settings = Settings(database_url=database.url, auth="smart", token_secret="rate-limit-test-secret-0123456789abcdef", rate_limit_per_minute=3)
    uv, thread, port = run_server(settings, Store(database.engine))
    try:
        root = f"http://127.0.0.1:{port}"
        client = make_client(Store(database.engine), root + "/auth/token", role="admin", scope="system/*.rs")
        with client.http(root + "/fhir") as http:
            statuses = [http.get("/Patient", params={"_count": 1}).status_code for _ in range(5)]
            assert statuses[:3] == [200, 200, 200] and statuses[-1] == 429
            assert int(http.get("/Patient").headers["Retry-After"]) >= 1
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


def _finished_export(http: httpx.Client, kick_off: str) -> tuple[str, dict]:
    """Kick off an export, poll it to completion: (status URL, manifest)."""
    response = http.get(kick_off, headers={"Prefer": "respond-async"})
    assert response.status_code == 202, response.text
    status = response.headers["Content-Location"]
    for _ in range(300):
        answer = http.get(status)
        if answer.status_code == 200:
            break
        time.sleep(0.1)
    assert answer.status_code == 200, answer.text
    return status, answer.json()


def _export_ids(http: httpx.Client, kick_off: str) -> set[str]:
    ids = set()
    for output in _finished_export(http, kick_off)[1]["output"]:
        for line in http.get(output["url"]).text.splitlines():
            if line.strip():
                ids.add(httpx.Response(200, content=line).json()["id"])
    return ids


def test_site_export_contains_only_its_site(sites, secure_server) -> None:
    with _b(sites, secure_server) as http:
        exported = _export_ids(http, "/Patient/$export?_type=Patient,Observation")
    assert sites["data"]["b"]["patient"]["id"] in exported
    assert sites["data"]["a"]["patient"]["id"] not in exported
    assert sites["data"]["a"]["observation"]["id"] not in exported


def test_export_status_and_files_belong_to_the_client_that_asked(sites, secure_server) -> None:
    with sites["clients"]["a"].http(secure_server.base) as http:
        status, manifest = _finished_export(http, "/Patient/$export?_type=Patient")
        file_url = manifest["output"][0]["url"]
    with _b(sites, secure_server) as http:
        assert http.get(status).status_code == 404
        assert http.get(file_url).status_code == 404
        assert http.delete(status).status_code == 404
    with sites["clients"]["admin"].http(secure_server.base) as http:
        assert http.get(status).status_code == 200
    with sites["clients"]["a"].http(secure_server.base) as http:
        assert http.get(file_url).status_code == 200
        assert http.delete(status).status_code == 202


def test_analyst_may_not_bulk_export(sites, secure_server) -> None:
    with sites["clients"]["analyst"].http(secure_server.base) as http:
        assert http.get("/$export", headers={"Prefer": "respond-async"}).status_code == 403
