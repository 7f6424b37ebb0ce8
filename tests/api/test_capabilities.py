"""The CapabilityStatement tells the truth, checked against what the server does over HTTP.

- Every type: each interaction, conditional form and ``$validate`` is tried on an official R4
  example of the type; what works must be exactly what ``/metadata`` declares for it (the audit
  trail, read-only for everybody, declares no write).
- Every declared search parameter of every type is answered under ``Prefer: handling=strict``
  (which refuses unknown ones), and one parameter per search type finds what it should.
- Every declared operation and system interaction is run.
- Every route of the app maps to something the statement declares: a new route fails here until it
  is declared (or listed as outside FHIR's REST API).
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import TEST_DEID_KEY, Database, serving

from fhirfus.search.query import component_types
from fhirfus.search.registry import params_for
from fhirfus.settings import Settings
from fhirfus.store import repository
from fhirfus.store.repository import Store
from tests.auth.test_access_matrix import app_routes
from tests.domain.test_domain_writes import response_for

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "fhir-r4-examples" / "spec-inline"
STRICT = {"Prefer": "handling=strict"}
ASYNC = {"Prefer": "respond-async"}
TAG = {"system": "urn:fhirfus:test", "code": "capabilities"}


def rest(http: httpx.Client) -> dict:
    statement = http.get("/metadata").json()
    assert statement["resourceType"] == "CapabilityStatement"
    return dict(statement["rest"][0])


def declared(entry: dict) -> set[str]:
    """What a ``rest.resource`` entry promises, as the names ``exercise`` uses."""
    kinds = {i["code"] for i in entry.get("interaction", [])}
    kinds |= {f"${op['name']}" for op in entry.get("operation", [])}
    if entry.get("conditionalCreate"):
        kinds.add("conditionalCreate")
    if entry.get("conditionalUpdate"):
        kinds.add("conditionalUpdate")
    if entry.get("conditionalRead") == "full-support":
        kinds.add("conditionalRead")
    if entry.get("conditionalDelete") == "single":
        kinds.add("conditionalDelete")
    return kinds


# --- every type: interactions, conditional forms, $validate -----------------------------------------


#: Elements the official examples get wrong in R4 (``test_official_examples.ERRATA``): left out here.
ERRATA_ELEMENTS = {"DeviceMetric": "parent", "DeviceUseStatement": "reasonReference"}


def example(res_type: str) -> dict:
    """The official R4 example of ``res_type`` without its id and meta (nor a Binary's securityContext)."""
    candidates = sorted(EXAMPLES.glob(f"{res_type.lower()}__*.json"))
    if not candidates:
        pytest.fail(f"no official example of {res_type} in {EXAMPLES}")
    body = json.loads(candidates[0].read_text(encoding="utf-8"))
    if body["resourceType"] != res_type:  # some types' example is a Bundle holding it
        body = next(e["resource"] for e in body["entry"] if e.get("resource", {}).get("resourceType") == res_type)
    body.pop("id", None)
    body.pop("meta", None)
    body.pop("securityContext", None)  # a Binary's names a resource not there: it could not be read
    body.pop(ERRATA_ELEMENTS.get(res_type, ""), None)
    return dict(body)


def _read(http: httpx.Client, path: str, **headers: str) -> httpx.Response:
    return http.get(path, headers={"Accept": "application/fhir+json", **headers})  # a Binary answers JSON too


def exercise(http: httpx.Client, res_type: str, body: dict, seed: Callable[[], str]) -> set[str]:
    """The interactions, conditional forms and operations that work on ``res_type``, each tried.

    ``seed`` writes a resource without HTTP, so that reads are tried where create is refused."""
    works: set[str] = set()
    created = http.post(f"/{res_type}", json=body)
    if created.status_code == 201:
        works.add("create")
    res_id = created.json()["id"] if created.status_code == 201 else seed()
    path = f"/{res_type}/{res_id}"
    again = http.post(f"/{res_type}", json=body, headers={"If-None-Exist": f"_id={res_id}"})
    if again.status_code == 200 and again.json().get("id") == res_id:
        works.add("conditionalCreate")
    read = _read(http, path)
    if read.status_code == 200 and read.json()["id"] == res_id:
        works.add("read")
        modified = read.headers["Last-Modified"]
        if (_read(http, path, **{"If-None-Match": 'W/"1"'}).status_code == 304
                and _read(http, path, **{"If-Modified-Since": modified}).status_code == 304
                and _read(http, path, **{"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}).status_code == 200):
            works.add("conditionalRead")
    if _read(http, f"{path}/_history/1").status_code == 200:
        works.add("vread")
    updated = http.put(path, json={**body, "id": res_id, "meta": {"tag": [TAG]}})
    if updated.status_code == 200 and updated.json()["meta"]["versionId"] == "2":
        works.add("update")
    patched = http.patch(path, content=json.dumps([{"op": "add", "path": "/language", "value": "en"}]),
                         headers={"Content-Type": "application/json-patch+json"})
    if patched.status_code == 200 and patched.json().get("language") == "en":
        works.add("patch")
    history = http.get(f"{path}/_history")
    if history.status_code == 200 and history.json()["entry"]:
        works.add("history-instance")
    if http.get(f"/{res_type}/_history", params={"_count": "1"}).status_code == 200:
        works.add("history-type")
    found = http.get(f"/{res_type}", params={"_id": res_id})
    if found.status_code == 200 and [e["resource"]["id"] for e in found.json().get("entry", [])] == [res_id]:
        works.add("search-type")
    conditional = http.put(f"/{res_type}", params={"_id": res_id}, json={**body, "id": res_id})
    if conditional.status_code == 200 and conditional.json()["id"] == res_id:
        works.add("conditionalUpdate")
    validated = http.post(f"/{res_type}/$validate", json=body)
    if validated.status_code == 200 and not [i for i in validated.json()["issue"] if i["severity"] == "error"]:
        works.add("$validate")
    if http.delete(path).status_code == 200 and _read(http, path).status_code == 410:
        works.add("delete")
    first, second = seed(), seed()
    several = http.delete(f"/{res_type}", params={"_id": f"{first},{second}"})
    single = http.delete(f"/{res_type}", params={"_id": first})
    if several.status_code == 412 and single.status_code == 200 and _read(http, f"/{res_type}/{first}").status_code == 410:
        works.add("conditionalDelete")
    return works


@pytest.fixture(scope="module")
def lenient_server(database: Database) -> Iterator[str]:
    """The official examples reference resources that are not there: referential integrity off."""
    settings = Settings(database_url=database.url, auth="off", referential_integrity="off", deid_key=TEST_DEID_KEY)
    with serving(settings, Store(database.engine)) as (root, _app):
        yield root + "/fhir"


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"the official R4 examples are absent ({EXAMPLES})")
def test_every_type_does_exactly_what_the_statement_declares(lenient_server: str, database: Database) -> None:
    store = Store(database.engine)
    with httpx.Client(base_url=lenient_server, timeout=60) as http:
        entries = {entry["type"]: entry for entry in rest(http)["resource"]}
        mismatches: dict[str, dict[str, set[str]]] = {}
        for res_type, entry in sorted(entries.items()):
            body = example(res_type)

            def seed(body: dict = body, res_type: str = res_type) -> str:
                res_id = f"seed-{uuid.uuid4().hex[:16]}"
                with store.writing() as conn:
                    repository.create(conn, res_type, res_id, copy.deepcopy(body))
                return res_id

            works, promised = exercise(http, res_type, body, seed), declared(entry)
            # operations other than $validate are exercised on their own below
            promised = {kind for kind in promised if not kind.startswith("$") or kind == "$validate"}
            if works != promised:
                mismatches[res_type] = {"declared, failing": promised - works, "working, undeclared": works - promised}
    if mismatches:
        pytest.fail("\n".join(f"{t}: {m}" for t, m in mismatches.items()))
    assert len(entries) >= 120
    assert "create" not in declared(entries["AuditEvent"]) and "read" in declared(entries["AuditEvent"])


# --- search parameters --------------------------------------------------------------------------------

VALUES = {"string": "x", "token": "x", "date": "2020", "number": "1", "quantity": "1",
          "uri": "http://example.org/x", "reference": "x"}


def value_for(res_type: str, name: str, kind: str) -> str:
    if kind != "composite":
        return VALUES[kind]
    return "$".join(VALUES[part] for part in component_types(res_type, params_for(res_type)[name]))


def test_every_declared_search_parameter_is_answered(client: httpx.Client) -> None:
    statement = rest(client)
    refused: dict[str, str] = {}
    asked = 0
    for entry in statement["resource"]:
        for param in entry["searchParam"]:
            value = value_for(entry["type"], param["name"], param["type"])
            answer = client.get(f"/{entry['type']}", params={param["name"]: value, "_count": "1"}, headers=STRICT)
            asked += 1
            if answer.status_code != 200:
                refused[f"{entry['type']}?{param['name']}={value}"] = answer.text[:200]
    for param in statement["searchParam"]:
        answer = client.get("", params={param["name"]: value_for("Patient", param["name"], param["type"]),
                                        "_type": "Patient"}, headers=STRICT)
        if answer.status_code != 200:
            refused[f"?{param['name']}"] = answer.text[:200]
    assert not refused, refused
    assert asked > 2000


def test_an_undeclared_search_parameter_is_refused_under_strict_handling(client: httpx.Client) -> None:
    patient = next(e for e in rest(client)["resource"] if e["type"] == "Patient")
    assert "_text" not in {p["name"] for p in patient["searchParam"]}
    assert client.get("/Patient", params={"_text": "x"}, headers=STRICT).status_code == 400


def _ids(answer: httpx.Response) -> set[str]:
    assert answer.status_code == 200, answer.text
    return {e["resource"]["id"] for e in answer.json().get("entry", []) if e.get("search", {}).get("mode") != "include"}


def _params(http: httpx.Client, res_type: str) -> dict[str, str]:
    entry = next(e for e in rest(http)["resource"] if e["type"] == res_type)
    return {p["name"]: p["type"] for p in entry["searchParam"]}


def test_one_declared_parameter_of_each_search_type_finds_what_it_should(client: httpx.Client, unique: str) -> None:
    patient = client.post("/Patient", json={
        "resourceType": "Patient", "name": [{"family": f"Cap{unique}"}], "birthDate": "1961-05-04",
        "identifier": [{"system": "urn:test:cap", "value": unique}]}).json()
    observation = client.post("/Observation", json={
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{patient['id']}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}], "text": unique},
        "valueQuantity": {"value": 141, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}).json()
    risk = client.post("/RiskAssessment", json={
        "resourceType": "RiskAssessment", "status": "final", "subject": {"reference": f"Patient/{patient['id']}"},
        "prediction": [{"probabilityDecimal": 0.25}]}).json()
    valueset = client.post("/ValueSet", json={"resourceType": "ValueSet", "status": "draft",
                                              "url": f"https://example.org/ValueSet/{unique}"}).json()
    subject = f"Patient/{patient['id']}"
    cases: list[tuple[str, str, str, dict[str, str], dict[str, str], str]] = [
        # search type, resource type, parameter, matching query, missing query, expected id
        ("string", "Patient", "family", {"family": f"Cap{unique}"}, {"family": f"Other{unique}"}, patient["id"]),
        ("token", "Patient", "identifier", {"identifier": f"urn:test:cap|{unique}"}, {"identifier": f"urn:test:cap|x{unique}"},
         patient["id"]),
        ("date", "Patient", "birthdate", {"birthdate": "1961-05", "family": f"Cap{unique}"},
         {"birthdate": "1962", "family": f"Cap{unique}"}, patient["id"]),
        ("reference", "Observation", "subject", {"subject": subject}, {"subject": f"Patient/x{unique}"}, observation["id"]),
        ("quantity", "Observation", "value-quantity", {"value-quantity": "gt140", "subject": subject},
         {"value-quantity": "lt140", "subject": subject}, observation["id"]),
        ("composite", "Observation", "code-value-quantity",
         {"code-value-quantity": "http://loinc.org|8480-6$gt140", "subject": subject},
         {"code-value-quantity": "http://loinc.org|8480-6$lt140", "subject": subject}, observation["id"]),
        ("number", "RiskAssessment", "probability", {"probability": "0.25", "subject": subject},
         {"probability": "gt0.5", "subject": subject}, risk["id"]),
        ("uri", "ValueSet", "url", {"url": valueset["url"]}, {"url": valueset["url"] + "x"}, valueset["id"]),
    ]
    assert {case[0] for case in cases} == set(VALUES) | {"composite"}
    for kind, res_type, name, matching, missing, expected in cases:
        assert _params(client, res_type)[name] == kind
        assert _ids(client.get(f"/{res_type}", params=matching, headers=STRICT)) == {expected}, (kind, name)
        assert _ids(client.get(f"/{res_type}", params=missing, headers=STRICT)) == set(), (kind, name)
    included = client.get("/Observation", params={"_id": observation["id"], "_include": "Observation:subject"}).json()
    assert {e["resource"]["id"] for e in included["entry"]} == {observation["id"], patient["id"]}
    revincluded = client.get("/Patient", params={"_id": patient["id"], "_revinclude": "Observation:subject"}).json()
    assert observation["id"] in {e["resource"]["id"] for e in revincluded["entry"]}


def test_the_implementation_guides_search_parameters_are_declared_and_work(client: httpx.Client, unique: str) -> None:
    ig = Path(__file__).resolve().parents[2] / "fhirfus" / "ig" / "searchparameters"
    definitions = [json.loads(p.read_text()) for p in sorted(ig.glob("*.json"))]
    assert definitions
    for definition in definitions:
        for base in definition["base"]:
            assert _params(client, base).get(definition["code"]) == definition["type"], (base, definition["code"])
    target = "https://fhirfus.org/fhir/CodeSystem/mrgfus-target"
    patient = client.post("/Patient", json={"resourceType": "Patient"}).json()
    procedure = client.post("/Procedure", json={
        "resourceType": "Procedure", "status": "completed", "subject": {"reference": f"Patient/{patient['id']}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1290014005"}]},
        "bodySite": [{"coding": [{"system": target, "code": "vo-complex"}]}]})
    if procedure.status_code != 201:
        pytest.fail(f"cannot write the sample Procedure: {procedure.text}")
    query = {"target": f"{target}|vo-complex", "subject": f"Patient/{patient['id']}"}
    assert _ids(client.get("/Procedure", params=query, headers=STRICT)) == {procedure.json()["id"]}


# --- operations and system interactions -----------------------------------------------------------------


def _cancel(http: httpx.Client, kicked: httpx.Response) -> bool:
    """A kick-off worked (202 with a status URL); the job is cancelled at once to spare the machine."""
    if kicked.status_code != 202:
        return False
    http.delete(kicked.headers["Content-Location"])
    return True


def operation_works(http: httpx.Client, level: str | None, name: str, patient: str, group: str) -> bool:
    """Run one declared operation (``level`` None: system level) the way a client would."""
    if name == "validate":  # at system level (POST /fhir/$validate) the body names its type
        return http.post(f"/{level or ''}/$validate".replace("//", "/"),
                         json={"resourceType": level or "Patient"}).status_code == 200
    if name == "everything":
        answer = http.get(f"/Patient/{patient}/$everything")
        return answer.status_code == 200 and patient in {e["resource"]["id"] for e in answer.json()["entry"]}
    if name == "extract":
        answer = http.post("/QuestionnaireResponse/$extract", json=response_for(patient))
        return answer.status_code == 200 and answer.json()["resourceType"] == "Bundle"
    if name == "export":
        path = {None: "/$export", "Patient": "/Patient/$export", "Group": f"/Group/{group}/$export"}[level]
        return _cancel(http, http.get(path, headers=ASYNC))
    if name == "import":
        line = json.dumps({"resourceType": "Patient", "id": f"cap-{uuid.uuid4().hex}"}).encode()
        kicked = http.post("/$import", headers=ASYNC | {"Content-Type": "application/fhir+ndjson"}, content=line)
        if kicked.status_code != 202:
            return False
        deadline = time.monotonic() + 30
        while (status := http.get(kicked.headers["Content-Location"])).status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.1)
        return status.status_code == 200 and status.json()["output"][0]["count"] == 1
    if name == "analysis-export":
        path = {None: "/$analysis-export", "Group": f"/Group/{group}/$analysis-export"}[level]
        return _cancel(http, http.get(path, headers=ASYNC))
    if name == "viewdefinition-run":
        answer = http.get("/$viewdefinition-run", params={"viewReference": "analysis_patient", "_format": "json",
                                                           "patient": patient})
        return answer.status_code == 200 and isinstance(answer.json(), list)
    if name == "viewdefinition-export":
        return _cancel(http, http.post("/$viewdefinition-export", headers=ASYNC, json={
            "resourceType": "Parameters", "parameter": [
                {"name": "view", "part": [{"name": "viewReference", "valueString": "analysis_patient"}]},
                {"name": "patient", "valueString": patient}]}))
    if level in TERMINOLOGY and name in TERMINOLOGY[level]:
        params, check = TERMINOLOGY[level][name]
        answer = http.get(f"/{level}/${name}", params=params)
        return answer.status_code == 200 and check(answer.json())
    raise AssertionError(f"the statement declares ${name} on {level or 'the system'}, which this test cannot run")


def _result(parameters: dict, name: str = "result") -> Any:
    part = next(p for p in parameters["parameter"] if p["name"] == name)
    return next((part[k] for k in ("valueBoolean", "valueCode", "valueString") if k in part), None)


TARGET_CS = "https://fhirfus.org/fhir/CodeSystem/mrgfus-target"
#: type → operation → (query, what a right answer holds), over the guide's terminology
TERMINOLOGY: dict[str, dict[str, tuple[dict[str, str], Callable[[dict], bool]]]] = {
    "ValueSet": {
        "expand": ({"url": "https://fhirfus.org/fhir/ValueSet/mrgfus-target"},
                   lambda vs: "vo-complex" in {c["code"] for c in vs["expansion"]["contains"]}),
        "validate-code": ({"url": "https://fhirfus.org/fhir/ValueSet/mrgfus-target", "system": TARGET_CS,
                           "code": "vo-complex"}, lambda p: _result(p) is True),
    },
    "CodeSystem": {
        "lookup": ({"system": TARGET_CS, "code": "vo-complex"}, lambda p: bool(_result(p, "display"))),
        "validate-code": ({"url": TARGET_CS, "code": "vo-complex"}, lambda p: _result(p) is True),
        "subsumes": ({"system": TARGET_CS, "codeA": "vo-complex", "codeB": "vo-complex"},
                     lambda p: _result(p, "outcome") == "equivalent"),
    },
    "ConceptMap": {
        "translate": ({"system": "https://fhirfus.org/fhir/CodeSystem/cd-subtype", "code": "anterocollis",
                       "targetsystem": "http://hl7.org/fhir/sid/icd-10"}, lambda p: _result(p) is True),
    },
}


def test_every_declared_operation_runs(client: httpx.Client) -> None:
    statement = rest(client)
    patient = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    group = client.post("/Group", json={"resourceType": "Group", "type": "person", "actual": True,
                                        "member": [{"entity": {"reference": f"Patient/{patient}"}}]}).json()["id"]
    declared_ops: set[tuple[str | None, str]] = {(None, op["name"]) for op in statement["operation"]}
    for entry in statement["resource"]:
        declared_ops |= {(entry["type"], op["name"]) for op in entry.get("operation", [])}
    # $validate is run on every type by the test above; here once, beside every other operation
    sample = {op for op in declared_ops if op[1] != "validate"} | {("Patient", "validate"), (None, "validate")}
    failing = sorted((str(level), name) for level, name in sample if not operation_works(client, level, name, patient, group))
    assert not failing, failing
    assert {name for _, name in declared_ops} >= {"validate", "everything", "extract", "export", "analysis-export",
                                                   "expand", "lookup", "validate-code", "subsumes", "translate",
                                                   "viewdefinition-run", "viewdefinition-export",
                                                   "import"}


def test_transaction_and_batch_and_system_search_and_history_are_declared_and_work(client: httpx.Client, unique: str) -> None:
    declared_system = {i["code"] for i in rest(client)["interaction"]}
    assert declared_system == {"transaction", "batch", "search-system", "history-system"}
    urn = f"urn:uuid:{uuid.uuid4()}"
    transaction = client.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": urn, "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:cap", "value": unique}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": unique},
                      "subject": {"reference": urn}}, "request": {"method": "POST", "url": "Observation"}}]})
    assert transaction.status_code == 200 and transaction.json()["type"] == "transaction-response"
    batch = client.post("", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient?identifier=urn:cap|{unique}"}}]})
    assert batch.status_code == 200 and batch.json()["type"] == "batch-response"
    assert batch.json()["entry"][0]["resource"]["total"] == 1
    found = client.get("", params={"_type": "Patient,Observation", "_lastUpdated": "ge2000-01-01", "_count": "1"})
    assert found.status_code == 200 and found.json()["type"] == "searchset"
    history = client.get("/_history", params={"_count": "1"})
    assert history.status_code == 200 and history.json()["type"] == "history"


def test_versioned_update_update_as_create_and_read_history_are_real(client: httpx.Client, unique: str) -> None:
    patient = next(e for e in rest(client)["resource"] if e["type"] == "Patient")
    assert (patient["versioning"], patient["updateCreate"], patient["readHistory"]) == ("versioned-update", True, True)
    path = f"/Patient/cap-{unique}"
    assert client.put(path, json={"resourceType": "Patient", "id": f"cap-{unique}"}).status_code == 201
    assert client.put(path, json={"resourceType": "Patient", "id": f"cap-{unique}", "active": True},
                      headers={"If-Match": 'W/"1"'}).status_code == 200
    stale = client.put(path, json={"resourceType": "Patient", "id": f"cap-{unique}", "active": False},
                       headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert "active" not in client.get(f"{path}/_history/1").json()


def test_conditional_read_honours_if_modified_since(client: httpx.Client) -> None:
    patient = client.post("/Patient", json={"resourceType": "Patient"})
    path = f"/Patient/{patient.json()['id']}"
    modified = patient.headers["Last-Modified"]
    assert client.get(path, headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get(path, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200
    assert client.get(path, headers={"If-Modified-Since": "not a date"}).status_code == 200  # ignored (RFC 9110)
    # If-None-Match wins when both are sent (RFC 9110 §13.2.2)
    assert client.get(path, headers={"If-None-Match": 'W/"7"', "If-Modified-Since": modified}).status_code == 200


def test_the_statement_tells_formats_profiles_and_reference_policy(client: httpx.Client) -> None:
    statement = client.get("/metadata").json()
    assert "application/fhir+json" in statement["format"]
    assert statement["patchFormat"] == ["application/json-patch+json", "application/fhir+json", "application/fhir+xml"]
    entries = {entry["type"]: entry for entry in statement["rest"][0]["resource"]}
    ig = Path(__file__).resolve().parents[2] / "fhirfus" / "ig" / "profiles"
    for path in sorted(ig.glob("StructureDefinition-*.json")):
        profile = json.loads(path.read_text())
        if profile.get("kind") == "resource":
            assert profile["url"] in entries[profile["type"]].get("supportedProfile", []), profile["url"]
    assert "enforced" in entries["Observation"]["referencePolicy"]  # the test server checks references
    # XML is spoken, as the statement's formats say
    assert "application/fhir+xml" in statement["format"]
    assert client.get("/metadata", params={"_format": "xml"}).headers["content-type"].startswith("application/fhir+xml")
    assert client.post("/Patient", content=b"<Patient xmlns='http://hl7.org/fhir'/>",
                       headers={"Content-Type": "application/fhir+xml"}).status_code == 201


# --- every route is declared ----------------------------------------------------------------------------

#: Routes outside FHIR's REST interactions (authentication, API documentation): declared elsewhere.
NOT_FHIR_REST = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/auth/token",
                 "/fhir/.well-known/smart-configuration", "/fhir/_pulls"}  # _pulls: the hub's admin JSON


def _route_declaration(method: str, path: str) -> tuple[str | None, str] | None:
    """(level, what the statement must declare for this route); level None: system, "*": every type."""
    table: dict[tuple[str, str], tuple[str | None, str]] = {
        ("GET", "/fhir/metadata"): (None, "capabilities"),
        ("GET", "/fhir/_history"): (None, "history-system"),
        ("GET", "/fhir"): (None, "search-system"), ("GET", "/fhir/"): (None, "search-system"),
        ("POST", "/fhir/_search"): (None, "search-system"),
        ("POST", "/fhir"): (None, "transaction"), ("POST", "/fhir/"): (None, "batch"),
        ("GET", "/fhir/{res_type}"): ("*", "search-type"), ("POST", "/fhir/{res_type}/_search"): ("*", "search-type"),
        ("POST", "/fhir/{res_type}"): ("*", "create"), ("PUT", "/fhir/{res_type}"): ("*", "conditionalUpdate"),
        ("DELETE", "/fhir/{res_type}"): ("*", "conditionalDelete"),
        ("GET", "/fhir/{res_type}/_history"): ("*", "history-type"),
        ("GET", "/fhir/{res_type}/{res_id}"): ("*", "read"), ("HEAD", "/fhir/{res_type}/{res_id}"): ("*", "read"),
        ("PUT", "/fhir/{res_type}/{res_id}"): ("*", "update"), ("PATCH", "/fhir/{res_type}/{res_id}"): ("*", "patch"),
        ("DELETE", "/fhir/{res_type}/{res_id}"): ("*", "delete"),
        ("GET", "/fhir/{res_type}/{res_id}/_history"): ("*", "history-instance"),
        ("GET", "/fhir/{res_type}/{res_id}/_history/{version_id}"): ("*", "vread"),
        ("POST", "/fhir/{res_type}/$validate"): ("*", "$validate"),
        ("POST", "/fhir/{res_type}/{res_id}/$validate"): ("*", "$validate"),
        ("GET", "/fhir/Patient/{res_id}/$everything"): ("Patient", "$everything"),
        **{(method, path): (None, "$viewdefinition-run")  # the operation under its earlier SQL on FHIR name
           for method in ("GET", "POST") for path in ("/fhir/ViewDefinition/$run", "/fhir/ViewDefinition/{view_id}/$run")},
        ("POST", "/fhir/ViewDefinition/$viewdefinition-export"): (None, "$viewdefinition-export"),  # type level
    }
    if (method, path) in table:
        return table[(method, path)]
    system_operation = re.fullmatch(r"/fhir/(\$[a-z-]+)", path)
    if system_operation:
        return (None, system_operation[1])
    operation = re.fullmatch(r"/fhir/([A-Z][A-Za-z]+)/(\{res_id\}/)?(\$[a-z-]+)", path)
    if operation and operation[3] != "$export":
        return (operation[1], operation[3])  # $everything, $extract, the terminology operations
    for prefix, level in (("/fhir/Patient/", "Patient"), ("/fhir/Group/", "Group"), ("/fhir/", None)):
        for operation in ("$export", "$analysis-export"):
            if path.startswith(prefix) and path.endswith(operation):
                return (level, operation)
    if path.startswith("/fhir/_export/"):
        return (None, "$export")  # status, files and cancel of an export job
    if path.startswith("/fhir/_import/"):
        return (None, "$import")  # status, error files and cancel of an import job
    if path.startswith("/fhir/_analysis/"):
        return (None, "$analysis-export")
    return None


def test_every_route_of_the_server_is_declared(client: httpx.Client, server: Any) -> None:
    from fhirfus.api.app import create_app

    statement = rest(client)
    system = {i["code"] for i in statement["interaction"]} | {f"${op['name']}" for op in statement["operation"]} | {
        "capabilities"}
    by_type = {entry["type"]: declared(entry) for entry in statement["resource"]}
    undeclared: list[tuple[str, str]] = []
    app = create_app(Settings(database_url=server.database.url, auth="off"), Store(server.database.engine))
    for method, path in sorted(app_routes(app)):
        if path in NOT_FHIR_REST or path == "/app" or path.startswith("/app/"):  # the web console: HTML for people
            continue
        declaration = _route_declaration(method, path)
        if declaration is None:
            undeclared.append((method, path))
            continue
        level, kind = declaration
        if level is None:
            ok = kind in system
        elif level == "*":
            ok = any(kind in kinds for kinds in by_type.values())
        else:
            ok = kind in by_type[level]
        if not ok:
            undeclared.append((method, path))
    assert not undeclared, undeclared


def test_the_statement_follows_the_referential_integrity_setting(lenient_server: str) -> None:
    with httpx.Client(base_url=lenient_server, timeout=30) as http:
        observation = next(e for e in rest(http)["resource"] if e["type"] == "Observation")
    assert "enforced" not in observation["referencePolicy"]

