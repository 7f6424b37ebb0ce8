"""Bad input, tried as an attacker would (issue #16): every item is a 4xx OperationOutcome naming
what is wrong (inside a batch: a per-entry error in the batch-response), on SQLite and PostgreSQL,
and a refused request writes nothing.

Each test here is one item of the issue's list; ``tests/api/test_bad_input_fuzz.py`` looks for the
rest of each family.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest
from conftest import Server

from fhirfus.search.limits import (
    MAX_CHAIN_DEPTH,
    MAX_OR_VALUES,
    MAX_PARAMETERS,
    MAX_REPEATS,
    MAX_VALUE_LENGTH,
)
from tests.api.test_bad_input_fuzz import Request as RawRequest
from tests.api.test_bad_input_fuzz import send_raw


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    """A client that opens a new connection per request, so one dropped connection is seen as such."""
    with server.client(headers={"Connection": "close"}) as client:
        yield client


def refused(response: httpx.Response, status: int | tuple[int, ...] = 400) -> dict:
    """The response is the expected 4xx with an OperationOutcome; returns the outcome."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    assert outcome["issue"] and all(i["severity"] in ("error", "fatal") for i in outcome["issue"]), outcome
    return outcome


def expressions(outcome: dict) -> list[str]:
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


def diagnostics(outcome: dict) -> str:
    return " ".join(issue.get("diagnostics", "") for issue in outcome["issue"])


def patient(http: httpx.Client) -> str:
    response = http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Bad-Input"}]})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def bundle(kind: str, *entries: object) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post_entry(resource: dict, url: str | None = None, **request: object) -> dict:
    return {"resource": resource, "request": {"method": "POST", "url": url or resource["resourceType"], **request}}


def put_entry(resource: dict, url: str, **request: object) -> dict:
    return {"resource": resource, "request": {"method": "PUT", "url": url, **request}}


def patch_binary(data: str) -> dict:
    return {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}


# --- ids in the URL -----------------------------------------------------------------------------

BAD_URL_IDS = ["a%00b", "a%20b", "%00", "a%0Ab", "x" * 65, "a%C3%A9", "a_b"]


@pytest.mark.parametrize("bad_id", BAD_URL_IDS)
@pytest.mark.parametrize("method,template", [
    ("GET", "/Patient/{id}"),
    ("HEAD", "/Patient/{id}"),
    ("DELETE", "/Patient/{id}"),
    ("GET", "/Patient/{id}/_history/1"),
    ("GET", "/Patient/{id}/_history"),
    ("GET", "/Patient/{id}/$everything"),
])
def test_an_id_outside_the_r4_rule_is_400_naming_the_id(http: httpx.Client, method: str, template: str,
                                                        bad_id: str) -> None:
    response = http.request(method, template.format(id=bad_id))
    if method == "HEAD":
        assert response.status_code == 400
        return
    outcome = refused(response)
    assert "Patient.id" in expressions(outcome)


@pytest.mark.parametrize("bad_id", ["a%00b", "a%20b", "x" * 65])
def test_an_update_to_an_id_outside_the_r4_rule_writes_nothing(http: httpx.Client, server: Server,
                                                              bad_id: str) -> None:
    before = server.database.counts()
    refused(http.put(f"/Patient/{bad_id}", json={"resourceType": "Patient"}))
    refused(http.patch(f"/Patient/{bad_id}", content=b"[]", headers={"Content-Type": "application/json-patch+json"}))
    assert server.database.counts() == before


@pytest.mark.parametrize("bad_id", ["a%00b", "a%20b", "%00", "x" * 200])
def test_a_bulk_export_status_url_with_a_malformed_job_id_is_a_4xx(http: httpx.Client, bad_id: str) -> None:
    refused(http.get(f"/_export/{bad_id}"), (400, 404))
    refused(http.delete(f"/_export/{bad_id}"), (400, 404))
    refused(http.get(f"/_export/{bad_id}/Patient.1.ndjson"), (400, 404))


@pytest.mark.parametrize("bad_id", ["a%00b", "a%20b", "x" * 65])
def test_an_analysis_export_status_url_with_a_malformed_job_id_is_a_4xx(http: httpx.Client, bad_id: str) -> None:
    refused(http.get(f"/_analysis/{bad_id}"), (400, 404))


@pytest.mark.parametrize("version", ["99999999999999999999", "1e3", "-1", "0", "1.5", "%00", "01"])
def test_a_version_id_that_is_no_version_number_is_a_4xx(http: httpx.Client, version: str) -> None:
    pid = patient(http)
    outcome = refused(http.get(f"/Patient/{pid}/_history/{version}"))
    assert expressions(outcome) == ["meta.versionId"]


def test_analysis_export_of_an_unknown_group_is_404(http: httpx.Client) -> None:
    outcome = refused(http.get(f"/Group/{uuid.uuid4()}/$analysis-export", headers={"Prefer": "respond-async"}), 404)
    assert "Group.id" in expressions(outcome) or "Group" in diagnostics(outcome)


@pytest.mark.parametrize("bad_id", ["a%00b", "a%20b"])
def test_analysis_export_of_a_malformed_group_id_is_400(http: httpx.Client, bad_id: str) -> None:
    outcome = refused(http.get(f"/Group/{bad_id}/$analysis-export", headers={"Prefer": "respond-async"}))
    assert expressions(outcome) == ["Group.id"]


# --- batch and transaction entries -------------------------------------------------------------

BAD_ENTRY_REQUESTS = {
    "url /": {"method": "GET", "url": "/"},
    "url ?x=1": {"method": "GET", "url": "?x=1"},
    "POST url /": {"method": "POST", "url": "/"},
    "PUT url ?x=1": {"method": "PUT", "url": "?x=1"},
    "DELETE url /": {"method": "DELETE", "url": "/"},
    "ifNoneExist a number": {"method": "POST", "url": "Patient", "ifNoneExist": 5},
    "ifNoneExist an object": {"method": "POST", "url": "Patient", "ifNoneExist": {"a": 1}},
    "ifMatch a number": {"method": "PUT", "url": "Patient/x1", "ifMatch": 1},
    "ifMatch a list": {"method": "PUT", "url": "Patient/x1", "ifMatch": ["W/\"1\""]},
    "method a number": {"method": 1, "url": "Patient"},
    "url a number": {"method": "GET", "url": 12},
}


def _entry_for(request: dict) -> dict:
    return {"resource": {"resourceType": "Patient"}, "request": request}


@pytest.mark.parametrize("case", sorted(BAD_ENTRY_REQUESTS))
def test_a_malformed_transaction_entry_is_400_naming_the_entry(http: httpx.Client, server: Server,
                                                              case: str) -> None:
    before = server.database.counts()
    good = post_entry({"resourceType": "Patient"})
    outcome = refused(http.post("", json=bundle("transaction", good, _entry_for(BAD_ENTRY_REQUESTS[case]))))
    assert any(e.startswith("Bundle.entry[1]") for e in expressions(outcome)), outcome
    assert server.database.counts() == before


@pytest.mark.parametrize("case", sorted(BAD_ENTRY_REQUESTS))
def test_a_malformed_batch_entry_fails_alone(http: httpx.Client, case: str) -> None:
    good = post_entry({"resourceType": "Patient", "name": [{"family": "Kept"}]})
    response = http.post("", json=bundle("batch", good, _entry_for(BAD_ENTRY_REQUESTS[case])))
    assert response.status_code == 200, response.text
    first, second = response.json()["entry"]
    assert first["response"]["status"].startswith("201")
    assert second["response"]["status"].startswith("4"), second
    assert second["response"]["outcome"]["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("full_url", [5, {"a": 1}, ["urn:uuid:x"], True])
def test_a_non_string_full_url_is_refused(http: httpx.Client, server: Server, full_url: object) -> None:
    before = server.database.counts()
    entry = {"fullUrl": full_url, **post_entry({"resourceType": "Patient"})}
    outcome = refused(http.post("", json=bundle("transaction", entry)))
    assert "Bundle.entry[0].fullUrl" in expressions(outcome)
    response = http.post("", json=bundle("batch", entry))
    assert response.status_code == 200 and response.json()["entry"][0]["response"]["status"] == "400"
    assert server.database.counts() == before


def test_a_bundle_inside_a_batch_is_a_per_entry_error(http: httpx.Client, server: Server) -> None:
    """A batch or transaction Bundle is work, not content: stored it would look like work to do.
    A collection is content and is stored."""
    inner = bundle("batch", post_entry({"resourceType": "Patient"}))
    collection = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient"}}]}
    response = http.post("", json=bundle("batch", post_entry(inner, "Bundle"),
                                         post_entry({"resourceType": "Patient"}), post_entry(collection, "Bundle")))
    assert response.status_code == 200, response.text
    first, second, third = response.json()["entry"]
    assert first["response"]["status"].startswith("4"), first
    assert first["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[0].resource.type"]
    assert second["response"]["status"].startswith("201")
    assert third["response"]["status"].startswith("201"), third
    refused(http.post("/Bundle", json=inner))
    before = server.database.counts()
    refused(http.post("", json=bundle("transaction", post_entry(inner, "Bundle"))))
    assert server.database.counts() == before


def test_a_bundle_posted_as_a_batch_entry_resource_must_not_be_processed(http: httpx.Client) -> None:
    """A nested batch/transaction is data at most, never a second level of processing."""
    inner = bundle("transaction", post_entry({"resourceType": "Patient"}))
    response = http.post("", json=bundle("batch", {"request": {"method": "POST", "url": ""}, "resource": inner}))
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["status"].startswith("4")


@pytest.mark.parametrize("data", ["not base64!!", "AAAA", base64.b64encode(b"{not json").decode(),
                                  base64.b64encode(b'{"op": "add"}').decode(), 5])
def test_a_transaction_patch_with_bad_base64_or_json_is_400(http: httpx.Client, server: Server, data: object) -> None:
    pid = patient(http)
    before = server.database.counts()
    entry = {"resource": patch_binary(data), "request": {"method": "PATCH", "url": f"Patient/{pid}"}}  # type: ignore[arg-type]
    outcome = refused(http.post("", json=bundle("transaction", entry)))
    assert any(e.startswith("Bundle.entry[0]") for e in expressions(outcome))
    assert server.database.counts() == before


@pytest.mark.parametrize("where", ["family", "text", "key"])
def test_a_nul_inside_a_string_is_400(http: httpx.Client, server: Server, where: str) -> None:
    before = server.database.counts()
    resource: dict = {"resourceType": "Patient", "name": [{"family": "Do\u0000e"}]}
    if where == "text":
        resource = {"resourceType": "Patient", "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">a\u0000</div>"}}
    if where == "key":
        resource = {"resourceType": "Patient", "name": [{"fam\u0000ily": "Doe"}]}
    outcome = refused(http.post("/Patient", json=resource))
    assert expressions(outcome)
    refused(http.post("", json=bundle("transaction", post_entry(resource))))
    assert server.database.counts() == before


def test_a_nul_inside_a_search_value_is_400(http: httpx.Client) -> None:
    outcome = refused(http.get("/Patient", params={"name": "a\u0000b"}))
    assert "name" in expressions(outcome)


@pytest.mark.parametrize("bad_id", ["a b", "x" * 100, "a\u0000b", "a%00b", "ä", ""])
def test_a_transaction_put_to_an_id_outside_the_r4_rule_is_400(http: httpx.Client, server: Server,
                                                               bad_id: str) -> None:
    before = server.database.counts()
    entry = put_entry({"resourceType": "Patient"}, f"Patient/{bad_id}")
    refused(http.post("", json=bundle("transaction", entry)))
    entry_with_body_id = put_entry({"resourceType": "Patient", "id": bad_id}, f"Patient/{bad_id}")
    outcome = refused(http.post("", json=bundle("transaction", entry_with_body_id)))
    assert any(e.startswith("Bundle.entry[0]") for e in expressions(outcome))
    assert server.database.counts() == before


def test_duplicate_full_urls_in_a_transaction_are_400(http: httpx.Client, server: Server) -> None:
    before = server.database.counts()
    full_url = f"urn:uuid:{uuid.uuid4()}"
    first = {"fullUrl": full_url, **post_entry({"resourceType": "Patient"})}
    second = {"fullUrl": full_url, **post_entry({"resourceType": "Patient"})}
    outcome = refused(http.post("", json=bundle("transaction", first, second)))
    assert "Bundle.entry[1].fullUrl" in expressions(outcome)
    assert server.database.counts() == before


@pytest.mark.parametrize("entries", [{"request": {"method": "POST", "url": "Patient"}}, {}, "x", "", 5, 0, True, False,
                                     None])
def test_bundle_entry_not_given_as_an_array_is_400(http: httpx.Client, server: Server, entries: object) -> None:
    before = server.database.counts()
    for kind in ("transaction", "batch"):
        outcome = refused(http.post("", json={"resourceType": "Bundle", "type": kind, "entry": entries}))
        assert "Bundle.entry" in expressions(outcome)
    assert server.database.counts() == before


@pytest.mark.parametrize("operation", [
    {"op": "replace", "path": "/meta/versionId", "value": "99"},
    {"op": "add", "path": "/meta/lastUpdated", "value": "2000-01-01T00:00:00Z"},
    {"op": "remove", "path": "/meta"},
    {"op": "replace", "path": "/id", "value": "other-id"},
    {"op": "remove", "path": "/id"},
    {"op": "replace", "path": "/resourceType", "value": "Group"},
])
def test_a_json_patch_cannot_change_id_or_meta(http: httpx.Client, server: Server, operation: dict) -> None:
    pid = patient(http)
    before = server.database.counts()
    headers = {"Content-Type": "application/json-patch+json"}
    outcome = refused(http.patch(f"/Patient/{pid}", content=json.dumps([operation]), headers=headers))
    assert expressions(outcome)
    entry = {"resource": patch_binary(base64.b64encode(json.dumps([operation]).encode()).decode()),
             "request": {"method": "PATCH", "url": f"Patient/{pid}"}}
    refused(http.post("", json=bundle("transaction", entry)))
    assert server.database.counts() == before
    assert http.get(f"/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_a_json_patch_cannot_change_meta_tags_either(http: httpx.Client) -> None:
    """meta as a whole is fixed for a PATCH (tags and profiles change with a PUT); other elements patch."""
    pid = patient(http)
    headers = {"Content-Type": "application/json-patch+json"}
    tag = [{"op": "add", "path": "/meta/tag", "value": [{"system": "https://example.org", "code": "x"}]}]
    outcome = refused(http.patch(f"/Patient/{pid}", content=json.dumps(tag), headers=headers))
    assert expressions(outcome) == ["Patient.meta"]
    active = [{"op": "add", "path": "/active", "value": True}]
    response = http.patch(f"/Patient/{pid}", content=json.dumps(active), headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["meta"]["versionId"] == "2"


def test_a_batch_entry_of_an_unknown_type_fails_alone(http: httpx.Client) -> None:
    response = http.post("", json=bundle(
        "batch",
        post_entry({"resourceType": "Patient"}),
        {"resource": {"resourceType": "Spaceship"}, "request": {"method": "POST", "url": "Spaceship"}},
        {"request": {"method": "GET", "url": "Spaceship/1"}},
        post_entry({"resourceType": "Patient"}),
    ))
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses[0].startswith("201") and statuses[3].startswith("201")
    assert statuses[1].startswith("404") and statuses[2].startswith("404")


def test_a_transaction_entry_of_an_unknown_type_is_404_naming_the_entry(http: httpx.Client) -> None:
    entry = {"resource": {"resourceType": "Spaceship"}, "request": {"method": "POST", "url": "Spaceship"}}
    outcome = refused(http.post("", json=bundle("transaction", post_entry({"resourceType": "Patient"}), entry)), 404)
    assert "Bundle.entry[1].request.url" in expressions(outcome)


# --- search limits ------------------------------------------------------------------------------


def form_search(http: httpx.Client, path: str, params: list[tuple[str, str]]) -> httpx.Response:
    return http.post(path, content=urlencode(params), headers={"Content-Type": "application/x-www-form-urlencoded"})


def limit_refused(response: httpx.Response, word: str) -> None:
    outcome = refused(response)
    assert word in diagnostics(outcome), diagnostics(outcome)


def test_a_search_value_beyond_the_length_limit_is_400(http: httpx.Client) -> None:
    limit_refused(http.get("/Patient", params={"name": "x" * (MAX_VALUE_LENGTH + 1)}), "characters")
    assert http.get("/Patient", params={"name": "x" * MAX_VALUE_LENGTH}).status_code == 200


def test_a_60_kb_search_value_is_refused_before_the_database(http: httpx.Client) -> None:
    limit_refused(http.post("/Patient/_search", data={"name": "x" * 60_000}), "characters")


def test_too_many_search_parameters_are_400(http: httpx.Client) -> None:
    params = [(f"unknown{i}", "x") for i in range(MAX_PARAMETERS + 1)]
    limit_refused(form_search(http, "/Patient/_search", params), "parameters")


def test_3000_parameters_are_400(http: httpx.Client) -> None:
    """In a form the framework's own field limit answers first (with an OperationOutcome too)."""
    outcome = refused(form_search(http, "/Patient/_search", [(f"p{i}", "x") for i in range(3000)]))
    assert "parameters" in diagnostics(outcome) or "fields" in diagnostics(outcome)
    many = "&".join(f"p{i}=x" for i in range(1000))
    limit_refused(http.get(f"/Patient?{many}"), "parameters")


def test_a_chain_beyond_the_depth_limit_is_400(http: httpx.Client) -> None:
    deep = "subject:Patient." + "link:Patient." * MAX_CHAIN_DEPTH + "name"
    limit_refused(http.get("/Observation", params={deep: "x"}), "chain")
    ten_deep = "subject:Patient." + "link:Patient." * 9 + "name"
    limit_refused(http.get("/Observation", params={ten_deep: "x"}), "chain")


def test_a_has_chain_beyond_the_depth_limit_is_400(http: httpx.Client) -> None:
    deep = "_has:Observation:subject:" * (MAX_CHAIN_DEPTH + 1) + "code"
    limit_refused(http.get("/Patient", params={deep: "x"}), "chain")


def test_an_or_list_beyond_its_limit_is_400(http: httpx.Client) -> None:
    values = ",".join(f"v{i}" for i in range(MAX_OR_VALUES + 1))
    limit_refused(http.get("/Patient", params={"family": values}), "values")
    ok = ",".join(f"v{i}" for i in range(MAX_OR_VALUES))
    assert http.get("/Patient", params={"family": ok}).status_code == 200


def test_a_parameter_repeated_beyond_its_limit_is_400_quickly(http: httpx.Client) -> None:
    started = time.monotonic()
    limit_refused(http.get("/Patient", params=[("name", "x")] * 500), "repeated")
    assert time.monotonic() - started < 5
    assert http.get("/Patient", params=[("name", "x")] * MAX_REPEATS).status_code == 200


def test_search_limits_apply_to_system_search_and_bundle_entries(http: httpx.Client) -> None:
    limit_refused(http.get("", params={"_type": "Patient", "name": "x" * (MAX_VALUE_LENGTH + 1)}), "characters")
    long_get = {"request": {"method": "GET", "url": "Patient?" + "&".join(["name=x"] * 500)}}
    response = http.post("", json=bundle("batch", long_get))
    assert response.status_code == 200
    assert response.json()["entry"][0]["response"]["status"] == "400"


# --- long URLs ----------------------------------------------------------------------------------


def test_a_url_beyond_the_request_line_limit_is_414(http: httpx.Client, server: Server) -> None:
    from fhirfus.api.limits import MAX_URL_LENGTH

    outcome = refused(http.get("/Patient", params={"name": "x" * MAX_URL_LENGTH}), 414)
    assert outcome["issue"][0]["code"] == "too-costly"
    refused(http.get("/Patient/" + "x" * MAX_URL_LENGTH), 414)

    # beyond the HTTP parser's own limit (and httpx's: sent over a socket as written)
    answer = send_raw(server.base.removesuffix("/fhir"), RawRequest("GET", "/fhir/Patient?name=" + "x" * 100_000))
    assert answer.status == 414 and json.loads(answer.body)["resourceType"] == "OperationOutcome"


def test_the_readme_documents_every_limit() -> None:
    from pathlib import Path

    from fhirfus.api.limits import MAX_URL_LENGTH
    from fhirfus.search.limits import LIMITS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"| characters of the URL (path and query, as sent) | {MAX_URL_LENGTH} | 414 |" in readme
    for text, value in LIMITS:
        assert f"| {text} | {value} | 400 |" in readme, text


# --- found by the family test (tests/api/test_bad_input_fuzz.py) -------------------------------------


def test_a_malformed_prefer_header_is_refused_before_anything_is_written(http: httpx.Client, server: Server) -> None:
    before = server.database.counts()
    pid = patient(http)
    after_create = server.database.counts()
    headers = {"Prefer": "return=nonsense"}
    refused(http.post("/Patient", json={"resourceType": "Patient"}, headers=headers))
    refused(http.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "active": True}, headers=headers))
    refused(http.patch(f"/Patient/{pid}", content=b'[{"op":"add","path":"/active","value":true}]',
                       headers={**headers, "Content-Type": "application/json-patch+json"}))
    refused(http.post("/Binary", content=b"native content", headers={**headers, "Content-Type": "text/plain"}))
    assert server.database.counts() == after_create != before


@pytest.mark.parametrize("parameter", [-1, "x", {"name": "resource"}, [5], [{"name": 5}],
                                       [{"name": "patient", "valueReference": {"reference": 5}}]])
def test_a_parameters_body_of_the_wrong_shape_is_400(http: httpx.Client, parameter: object) -> None:
    body = {"resourceType": "Parameters", "parameter": parameter}
    refused(http.post("/Patient/$export", json=body, headers={"Prefer": "respond-async"}))
    refused(http.post("/Patient/$validate", json=body), (400, 422))


def test_sort_keys_beyond_the_or_list_limit_are_400(http: httpx.Client) -> None:
    limit_refused(http.get("/Patient", params={"_sort": ",".join(["name"] * (MAX_OR_VALUES + 1))}), "values")


def test_a_search_beyond_a_limit_runs_no_sql(http: httpx.Client, server: Server) -> None:
    """Refused on its parameters alone: no statement reads resources or the search index."""
    from sqlalchemy import event

    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        # the server's own background threads (jobs, deliveries, statistics) are named fhirfus-*
        if ("resources" in statement or "search_" in statement) and \
                not threading.current_thread().name.startswith("fhirfus-"):
            statements.append(statement)

    event.listen(server.database.engine, "before_cursor_execute", record)
    try:
        for params in ([("name", "x")] * (MAX_REPEATS + 1), [("name", "x" * (MAX_VALUE_LENGTH + 1))],
                       [("subject:Patient." + "link:Patient." * MAX_CHAIN_DEPTH + "name", "x")],
                       [(f"p{i}", "x") for i in range(MAX_PARAMETERS + 1)]):
            refused(http.get("/Observation", params=params))
        assert statements == []
        assert http.get("/Observation", params={"code": "x"}).status_code == 200
        assert statements  # the recorder sees the statements of a search that runs
    finally:
        event.remove(server.database.engine, "before_cursor_execute", record)


@pytest.mark.parametrize("line", [b'{"resourceType":"Patient","name":[{"family":"a\\u0000b"}]}',
                                  b'{"resourceType":"Patient","id":"a b"}', b"[1]", b"{"])
def test_fhirfus_load_refuses_a_bad_ndjson_line_and_writes_nothing(server: Server, tmp_path, line: bytes) -> None:
    from tests.ingest.test_load import _run

    path = tmp_path / "Patient.ndjson"
    path.write_bytes(b'{"resourceType":"Patient"}\n' + line + b"\n")
    before = server.database.counts()
    result = _run(server.database.url, str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert server.database.counts() == before


@pytest.mark.parametrize("patient_ref", ["Patient/a\u0000b", "Patient/a b", "Patient/" + "x" * 65])
def test_an_export_for_a_patient_id_outside_the_r4_rule_is_400(http: httpx.Client, server: Server,
                                                               patient_ref: str) -> None:
    outcome = refused(http.post("/Patient/$export", content=urlencode({"patient": patient_ref}),
                                headers={"Prefer": "respond-async", "Content-Type": "application/x-www-form-urlencoded"}))
    assert expressions(outcome) == ["patient"]


def test_an_export_with_too_many_type_filters_is_400(http: httpx.Client) -> None:
    filters = [("_typeFilter", f"Patient?name=x{i}") for i in range(MAX_OR_VALUES + 1)]
    outcome = refused(http.post("/$export", content=urlencode(filters),
                                headers={"Prefer": "respond-async", "Content-Type": "application/x-www-form-urlencoded"}))
    assert "_typeFilter" in expressions(outcome)


@pytest.mark.parametrize("target", ["/ValueSet/$expand?url=a%00b", "/CodeSystem/$lookup?system=%00&code=x",
                                    "/Patient?name=a%00b", "/Patient/$export?_type=Pati%00ent"])
def test_a_nul_in_any_query_parameter_is_400_naming_it(http: httpx.Client, target: str) -> None:
    """One check for every route that reads parameters (terminology operations included)."""
    outcome = refused(http.get(target, headers={"Prefer": "respond-async"}))
    name = target.split("?")[1].split("=")[0]
    assert expressions(outcome) == [name] and "NUL" in diagnostics(outcome)


@pytest.mark.parametrize("parameter", [True, -1, "x", [5], [{"name": "operation", "part": 5}]])
def test_a_fhirpath_patch_of_the_wrong_shape_is_400(http: httpx.Client, server: Server, parameter: object) -> None:
    pid = patient(http)
    before = server.database.counts()
    refused(http.patch(f"/Patient/{pid}", json={"resourceType": "Parameters", "parameter": parameter},
                       headers={"Content-Type": "application/fhir+json"}))
    assert server.database.counts() == before


@pytest.mark.parametrize("target", ["/Patient/$validate", "/$validate", "/ValueSet/$expand", "/ViewDefinition/$run",
                                    "/QuestionnaireResponse/$extract"])
@pytest.mark.parametrize("parameter", [True, -1, "x", {}])
def test_every_operation_refuses_a_parameters_body_whose_parameter_is_no_array(http: httpx.Client, target: str,
                                                                            parameter: object) -> None:
    outcome = refused(http.post(target, json={"resourceType": "Parameters", "parameter": parameter}))
    assert expressions(outcome) == ["Parameters.parameter"]


# --- found by the route fuzz (tests/test_bad_input_routes.py) -------------------------------------

#: Every kick-off that reads the ``part``s of a Parameters body, with a body whose first ``part`` is
#: replaced (the ``{}`` in the template) — the readers share ``fhir.validation.parameter_parts``.
PART_READERS = {
    "$import input": ("/$import", {"Prefer": "respond-async"}, {"resourceType": "Parameters", "parameter": [
        {"name": "input", "part": "{}"}]}),
    "$import storageDetail": ("/$import", {"Prefer": "respond-async"}, {"resourceType": "Parameters", "parameter": [
        {"name": "storageDetail", "part": "{}"}]}),
    "$viewdefinition-export view": ("/$viewdefinition-export", {"Prefer": "respond-async"}, {
        "resourceType": "Parameters", "parameter": [{"name": "view", "part": "{}"}]}),
}


@pytest.mark.parametrize("reader", sorted(PART_READERS))
@pytest.mark.parametrize("part", [-1, 1.5, True, "x", {"name": "type"}, [5], [{"valueString": "no name"}]])
def test_a_parameters_part_of_the_wrong_shape_is_400_naming_it(http: httpx.Client, server: Server, reader: str,
                                                               part: object) -> None:
    path, headers, template = PART_READERS[reader]
    body = json.loads(json.dumps(template).replace('"{}"', json.dumps(part)))
    before = server.database.counts()
    outcome = refused(http.post(path, json=body, headers=headers))
    assert any(e.startswith("Parameters.parameter[0]") for e in expressions(outcome)), outcome
    assert server.database.counts() == before


@pytest.mark.parametrize("part", [-1, "x", {"name": "type"}, [5]])
def test_a_viewdefinition_export_part_of_the_wrong_shape_after_other_parameters_is_400(http: httpx.Client,
                                                                                      part: object) -> None:
    body = {"resourceType": "Parameters", "parameter": [{"name": "_format", "valueCode": "csv"},
                                                        {"name": "view", "part": part}]}
    outcome = refused(http.post("/$viewdefinition-export", json=body, headers={"Prefer": "respond-async"}))
    assert any(e.startswith("Parameters.parameter[1]") for e in expressions(outcome)), outcome


def _parameters_value_types() -> list[str]:
    from fhir.resources.R4B.parameters import ParametersParameter

    return sorted(info.alias or name for name, info in ParametersParameter.model_fields.items()
                  if name.startswith("value") and not name.endswith("__ext"))


def test_every_datatype_given_each_wrong_json_type_is_an_issue_never_a_crash() -> None:
    """Parameters.parameter.value[x] takes every R4 datatype: each given each JSON type it is not
    (the ``url`` validator of the models called string methods on numbers). A scalar in the wrong
    place is an issue naming the element."""
    from fhirfus.fhir.validation import resource_issues

    unnamed = []
    for element in _parameters_value_types():
        for wrong in (0, -1, 2**70, 1.5, True, "", "x", [], [None], {}, {"a": 1}):
            issues = resource_issues({"resourceType": "Parameters", "parameter": [{"name": "x", element: wrong}]})
            named = [e for issue in issues for e in issue.expression if element in e]
            if issues and not named and not isinstance(wrong, list | dict):
                unnamed.append((element, wrong, issues[0].diagnostics))
    assert unnamed == []


@pytest.mark.parametrize("value", [1, 1.5, True])
def test_a_url_element_given_a_number_is_400_naming_it(http: httpx.Client, server: Server, value: object) -> None:
    before = server.database.counts()
    outcome = refused(http.post("/Patient", json={"resourceType": "Patient", "photo": [{"url": value}]}))
    assert expressions(outcome) == ["Patient.photo[0].url"]
    assert server.database.counts() == before


#: Whole-number parameters of operations, by route: each beyond FHIR's integer (2^31-1) is a 400
#: naming it (unbounded, they reached the JSON encoder or the database driver: a 500).
WHOLE_NUMBERS = [
    ("GET", "/ValueSet/$expand?url=https://fhirfus.org/fhir/ValueSet/mrgfus-target&count={}", "count"),
    ("GET", "/ValueSet/$expand?url=https://fhirfus.org/fhir/ValueSet/mrgfus-target&offset={}", "offset"),
    ("POST", "/ValueSet/$expand?url=https://fhirfus.org/fhir/ValueSet/mrgfus-target&count={}", "count"),
    ("GET", "/$viewdefinition-run?viewReference=analysis_patient&_format=json&_limit={}", "_limit"),
    ("GET", "/ViewDefinition/analysis_patient/$run?_format=csv&_limit={}", "_limit"),
]


@pytest.mark.parametrize("method,template,name", WHOLE_NUMBERS)
@pytest.mark.parametrize("value", ["99999999999999999999", "2147483648", "-1", "1e3", "1.5", "NaN", "%00"])
def test_a_whole_number_parameter_out_of_range_is_400_naming_it(http: httpx.Client, method: str, template: str,
                                                                 name: str, value: str) -> None:
    outcome = refused(http.request(method, template.format(value)))
    assert expressions(outcome) == [name], outcome


def test_a_whole_number_in_a_parameters_body_is_read_as_in_the_query(http: httpx.Client) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": "https://fhirfus.org/fhir/ValueSet/mrgfus-target"},
        {"name": "count", "valueInteger": 2**40}]}
    assert expressions(refused(http.post("/ValueSet/$expand", json=body))) == ["count"]
    body["parameter"][1] = {"name": "count", "valueInteger": 2}
    answer = http.post("/ValueSet/$expand", json=body)
    assert answer.status_code == 200 and len(answer.json()["expansion"]["contains"]) == 2, answer.text


#: Every route that reads a form body (``api.http.read_form``), with what else it needs.
FORM_READERS = {"/_search": {}, "/Patient/_search": {}, "/$export": {"Prefer": "respond-async"}}


@pytest.mark.parametrize("path", sorted(FORM_READERS))
@pytest.mark.parametrize("form", ["name=a%00b", "a%00=x", "_type=Patient&_count=1%00"])
@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_a_nul_in_any_form_field_is_400(http: httpx.Client, path: str, form: str, encoding: str) -> None:
    """As a NUL in the query is (limits.url_error): refused once, where forms are read, not by the
    database that cannot store it (PostgreSQL answered 500)."""
    headers = FORM_READERS[path]
    if encoding == "multipart" and form.startswith("a%00"):
        return  # a client escapes a NUL in a multipart field's name (httpx sends %00): none reaches the server
    if encoding == "urlencoded":
        answer = http.post(path, content=form, headers={"Content-Type": "application/x-www-form-urlencoded", **headers})
    else:
        from urllib.parse import parse_qsl

        answer = http.post(path, files={k: (None, v) for k, v in parse_qsl(form, keep_blank_values=True)},
                           headers=headers)
    refused(answer)


#: Routes that answer a file named in the path; ``{}`` is the name.
FILE_ROUTES = ["/app/static/{}", "/fhir/_export/" + "0" * 32 + "/{}", "/fhir/_import/" + "0" * 32 + "/{}",
               "/fhir/_analysis/" + "0" * 32 + "/{}"]


@pytest.mark.parametrize("route", FILE_ROUTES)
@pytest.mark.parametrize("name", ["x" * 300, "x" * 5000, "..", "%2e%2e%2fpages.py", "console.css%00", ".hidden",
                                  "a%2Fb", "%FF", "con", "console.css/"])
def test_a_file_name_in_the_path_that_names_no_file_is_a_4xx(server: Server, route: str, name: str) -> None:
    """(A name longer than the file system allows was an OSError: 500.)"""
    root = server.base.removesuffix("/fhir")
    answer = send_raw(root, RawRequest("GET", route.format(name)))
    assert 400 <= answer.status < 500, (answer.status, answer.body[:300])


def test_the_console_serves_its_stylesheet(server: Server) -> None:
    answer = httpx.get(server.base.removesuffix("/fhir") + "/app/static/console.css")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/css")
