"""Every route × method × caller, from the router itself: a new route without an access rule here fails.

Callers: no token, site A (its own data, site B's data, ids never used), site B, an admin, an
analyst. What holds for every route:
- without a token every ``/fhir`` route but the public ones answers 401;
- no caller ever gets a 5xx;
- no response to site A — JSON, Bundles, NDJSON export files, error messages — carries anything
  of site B's (every B resource holds a marker string, and B's label names a site only B has);
- site A's request on B's ids answers exactly as on ids never used (same status, same body with
  the id aside): what A may not see does not exist for A;
- A's writes aimed at B's ids change nothing of B's;
- an analyst reads no resource.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from auth_helpers import SiteIds, two_sites_and_roles

from fhirfus.store.repository import Store
from tests.domain.test_domain_writes import response_for

ASYNC = {"Prefer": "respond-async"}
#: The web console's pages for people: no bearer token opens them, only a console session
#: (``tests/api/test_console.py`` checks sites against each other there, with people logged in).
CONSOLE_PUBLIC = {"/app/login", "/app/setup", "/app/static/{name}", "/app/login/oidc", "/app/login/oidc/callback"}
PUBLIC = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/auth/token", "/fhir/metadata",
          "/fhir/.well-known/smart-configuration"}


@dataclass(frozen=True)
class Recipe:
    """How to call one route: method, URL, request arguments; whether answers compare body for body."""

    build: Callable[[SiteIds], tuple[str, dict[str, Any]]]
    compare_body: bool = True
    targeted: bool = True  # False: the route names no id (run once per caller, scanned only)


def _json(body: Any) -> dict[str, Any]:
    return {"json": body}


NDJSON = {"Content-Type": "application/fhir+ndjson"}
#: An ``$import`` upload whose one line is refused: the job completes with an error file, writing nothing.
REFUSED_LINE = b'{"resourceType": "Patient", "gender": "not-a-gender"}\n'
PATCH = {"content": json.dumps([{"op": "add", "path": "/active", "value": True}]),
         "headers": {"Content-Type": "application/json-patch+json"}}


def _batch(t: SiteIds) -> dict[str, Any]:
    return _json({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{t.patient}"}},
        {"request": {"method": "GET", "url": f"Patient/{t.deleted}/_history/1"}},
        {"request": {"method": "GET", "url": f"Patient?_id={t.patient}"}},
        {"request": {"method": "GET", "url": f"Patient/{t.deleted}/_history"}},
    ]})


#: terminology operations at type level: the guide's resources (stored ones: test_site_isolation)
_TERMINOLOGY: dict[str, dict[str, str]] = {
    "ValueSet/$expand": {"url": "https://fhirfus.org/fhir/ValueSet/mrgfus-target"},
    "ValueSet/$validate-code": {"url": "https://fhirfus.org/fhir/ValueSet/mrgfus-target", "code": "vim"},
    "CodeSystem/$lookup": {"system": "https://fhirfus.org/fhir/CodeSystem/cd-subtype", "code": "laterocollis"},
    "CodeSystem/$validate-code": {"url": "https://fhirfus.org/fhir/CodeSystem/cd-subtype", "code": "laterocollis"},
    "CodeSystem/$subsumes": {"system": "https://fhirfus.org/fhir/CodeSystem/cd-subtype", "codeA": "laterocollis",
                             "codeB": "laterocollis"},
    "ConceptMap/$translate": {"system": "https://fhirfus.org/fhir/CodeSystem/cd-subtype", "code": "laterocollis"},
}


#: (method, route path) → how to call it. Every route of the app must be here.
RECIPES: dict[tuple[str, str], Recipe] = {
    ("GET", "/openapi.json"): Recipe(lambda t: ("/openapi.json", {}), targeted=False),
    ("GET", "/docs"): Recipe(lambda t: ("/docs", {}), targeted=False),
    ("GET", "/docs/oauth2-redirect"): Recipe(lambda t: ("/docs/oauth2-redirect", {}), targeted=False),
    ("GET", "/redoc"): Recipe(lambda t: ("/redoc", {}), targeted=False),
    ("POST", "/auth/token"): Recipe(lambda t: ("/auth/token", {"data": {"grant_type": "client_credentials"}}),
                                    targeted=False),
    ("GET", "/fhir/.well-known/smart-configuration"): Recipe(
        lambda t: ("/fhir/.well-known/smart-configuration", {}), targeted=False),
    ("GET", "/fhir/metadata"): Recipe(lambda t: ("/fhir/metadata", {}), targeted=False),
    ("GET", "/fhir/_history"): Recipe(lambda t: ("/fhir/_history", {"params": {"_count": "1000"}}), targeted=False),
    ("GET", "/fhir/"): Recipe(lambda t: ("/fhir/", {"params": {"_id": t.patient}})),
    ("GET", "/fhir"): Recipe(lambda t: ("/fhir", {"params": {"_type": "Patient,Observation", "_count": "1000"}}),
                             targeted=False),
    ("POST", "/fhir/_search"): Recipe(lambda t: ("/fhir/_search", {"data": {"_id": t.patient}})),
    ("POST", "/fhir/"): Recipe(lambda t: ("/fhir/", _batch(t))),
    ("POST", "/fhir"): Recipe(lambda t: ("/fhir", _batch(t))),
    ("GET", "/fhir/$export"): Recipe(lambda t: ("/fhir/$export", {"headers": ASYNC}), targeted=False),
    ("POST", "/fhir/$export"): Recipe(lambda t: ("/fhir/$export", {"headers": ASYNC}), targeted=False),
    ("GET", "/fhir/Patient/$export"): Recipe(lambda t: ("/fhir/Patient/$export", {"headers": ASYNC}), targeted=False),
    ("POST", "/fhir/Patient/$export"): Recipe(
        lambda t: ("/fhir/Patient/$export", {"headers": ASYNC, "data": {"patient": f"Patient/{t.patient}"}}),
        compare_body=False),
    ("GET", "/fhir/Group/{group_id}/$export"): Recipe(lambda t: (f"/fhir/Group/{t.group}/$export", {"headers": ASYNC}),
                                                      compare_body=False),
    ("POST", "/fhir/Group/{group_id}/$export"): Recipe(
        lambda t: (f"/fhir/Group/{t.group}/$export", {"headers": ASYNC}), compare_body=False),
    ("GET", "/fhir/_export/{job_id}"): Recipe(lambda t: (f"/fhir/_export/{t.export_job}", {})),
    ("DELETE", "/fhir/_export/{job_id}"): Recipe(lambda t: (f"/fhir/_export/{t.export_job}", {})),
    ("GET", "/fhir/_pulls"): Recipe(lambda t: ("/fhir/_pulls", {}), targeted=False),  # admins only: 403 to others
    ("GET", "/fhir/_export/{job_id}/{name}"): Recipe(lambda t: (f"/fhir/_export/{t.export_job}/{t.export_file}", {})),
    ("POST", "/fhir/$import"): Recipe(lambda t: ("/fhir/$import", {"headers": ASYNC | NDJSON, "content": REFUSED_LINE}),
                                      targeted=False),
    ("GET", "/fhir/_import/{job_id}"): Recipe(lambda t: (f"/fhir/_import/{t.import_job}", {})),
    ("DELETE", "/fhir/_import/{job_id}"): Recipe(lambda t: (f"/fhir/_import/{t.import_job}", {})),
    ("GET", "/fhir/_import/{job_id}/{name}"): Recipe(lambda t: (f"/fhir/_import/{t.import_job}/{t.import_file}", {})),
    ("GET", "/fhir/$analysis-export"): Recipe(lambda t: ("/fhir/$analysis-export", {"headers": ASYNC}), targeted=False),
    ("GET", "/fhir/Group/{group_id}/$analysis-export"): Recipe(
        lambda t: (f"/fhir/Group/{t.group}/$analysis-export", {"headers": ASYNC}), compare_body=False),
    ("GET", "/fhir/_analysis/{job_id}"): Recipe(lambda t: (f"/fhir/_analysis/{t.analysis_job}", {})),
    ("DELETE", "/fhir/_analysis/{job_id}"): Recipe(lambda t: (f"/fhir/_analysis/{t.analysis_job}", {})),
    ("GET", "/fhir/_analysis/{job_id}/{name}"): Recipe(
        lambda t: (f"/fhir/_analysis/{t.analysis_job}/{t.analysis_file}", {})),
    **{(method, f"/fhir/{path}"): Recipe(lambda t, path=path, params=params: (f"/fhir/{path}", {"params": params}),
                                         targeted=False)
       for method in ("GET", "POST") for path, params in _TERMINOLOGY.items()},
    **{(method, "/fhir/ValueSet/{res_id}/$expand"): Recipe(lambda t: (f"/fhir/ValueSet/{t.valueset}/$expand", {}))
       for method in ("GET", "POST")},
    **{(method, "/fhir/ValueSet/{res_id}/$validate-code"): Recipe(
        lambda t: (f"/fhir/ValueSet/{t.valueset}/$validate-code", {"params": {"code": "c1"}})) for method in ("GET", "POST")},
    **{(method, "/fhir/CodeSystem/{res_id}/$validate-code"): Recipe(
        lambda t: (f"/fhir/CodeSystem/{t.codesystem}/$validate-code", {"params": {"code": "c1"}}))
       for method in ("GET", "POST")},
    **{(method, "/fhir/ConceptMap/{res_id}/$translate"): Recipe(
        lambda t: (f"/fhir/ConceptMap/{t.conceptmap}/$translate", {"params": {"system": t.codesystem_url, "code": "c1"}}))
       for method in ("GET", "POST")},
    **{(method, path): Recipe(lambda t, path=path: (path.replace("{view_id}", "analysis_patient"), {"params": {
        **({} if "{view_id}" in path else {"viewReference": "analysis_patient"}), "_format": "json"}}),
        targeted=False)
       for method in ("GET", "POST")
       for path in ("/fhir/$viewdefinition-run", "/fhir/ViewDefinition/$run", "/fhir/ViewDefinition/{view_id}/$run")},
    **{("POST", path): Recipe(lambda t, path=path: (path, {"headers": ASYNC, "json": {
        "resourceType": "Parameters", "parameter": [
            {"name": "view", "part": [{"name": "viewReference", "valueString": "analysis_patient"}]},
            {"name": "group", "valueString": t.group}]}}), compare_body=False)
       for path in ("/fhir/$viewdefinition-export", "/fhir/ViewDefinition/$viewdefinition-export")},
    ("GET", "/fhir/{res_type}"): Recipe(lambda t: ("/fhir/Patient", {"params": {"_id": t.patient,
                                                                                "_revinclude": "Observation:subject"}})),
    ("POST", "/fhir/{res_type}/_search"): Recipe(lambda t: ("/fhir/Observation/_search",
                                                           {"data": {"subject": f"Patient/{t.patient}",
                                                                     "_include": "Observation:subject"}})),
    ("POST", "/fhir/{res_type}"): Recipe(
        lambda t: ("/fhir/Patient", {"json": {"resourceType": "Patient"},
                                     "headers": {"If-None-Exist": f"identifier={t.identifier}"}}), compare_body=False),
    ("PUT", "/fhir/{res_type}"): Recipe(
        lambda t: ("/fhir/Patient", {"params": {"identifier": t.identifier}, "json": {"resourceType": "Patient"}}),
        compare_body=False),
    ("DELETE", "/fhir/{res_type}"): Recipe(lambda t: ("/fhir/Patient", {"params": {"identifier": t.identifier}})),
    ("POST", "/fhir/$validate"): Recipe(lambda t: ("/fhir/$validate", _json({"resourceType": "Patient"})),
                                        targeted=False),
    ("POST", "/fhir/{res_type}/$validate"): Recipe(lambda t: ("/fhir/Patient/$validate", _json({"resourceType": "Patient"})),
                                                   targeted=False),
    ("POST", "/fhir/{res_type}/{res_id}/$validate"): Recipe(
        lambda t: (f"/fhir/Patient/{t.patient}/$validate", {"params": {"mode": "delete"}})),
    ("POST", "/fhir/QuestionnaireResponse/$extract"): Recipe(
        lambda t: ("/fhir/QuestionnaireResponse/$extract", _json(response_for(t.patient))), compare_body=False),
    ("GET", "/fhir/QuestionnaireResponse/{res_id}/$extract"): Recipe(
        lambda t: (f"/fhir/QuestionnaireResponse/{t.response}/$extract", {}), compare_body=False),
    ("POST", "/fhir/QuestionnaireResponse/{res_id}/$extract"): Recipe(
        lambda t: (f"/fhir/QuestionnaireResponse/{t.response}/$extract", {}), compare_body=False),
    ("GET", "/fhir/Patient/{res_id}/$everything"): Recipe(lambda t: (f"/fhir/Patient/{t.patient}/$everything", {})),
    ("GET", "/fhir/{res_type}/_history"): Recipe(lambda t: ("/fhir/Patient/_history", {"params": {"_count": "1000"}}),
                                                 targeted=False),
    ("GET", "/fhir/{res_type}/{res_id}"): Recipe(lambda t: (f"/fhir/Patient/{t.patient}", {})),
    ("HEAD", "/fhir/{res_type}/{res_id}"): Recipe(lambda t: (f"/fhir/Patient/{t.patient}", {})),
    ("PUT", "/fhir/{res_type}/{res_id}"): Recipe(lambda t: (f"/fhir/Patient/{t.deleted}", _json({"resourceType": "Patient"}))),
    ("PATCH", "/fhir/{res_type}/{res_id}"): Recipe(lambda t: (f"/fhir/Patient/{t.patient}", PATCH)),
    ("DELETE", "/fhir/{res_type}/{res_id}"): Recipe(lambda t: (f"/fhir/Observation/{t.patient}", {})),
    ("GET", "/fhir/{res_type}/{res_id}/_history"): Recipe(lambda t: (f"/fhir/Patient/{t.deleted}/_history", {})),
    ("GET", "/fhir/{res_type}/{res_id}/_history/{version_id}"): Recipe(
        lambda t: (f"/fhir/Patient/{t.deleted}/_history/1", {})),
    **{(method, path): Recipe(lambda t, path=path, kwargs=kwargs: (
        path.format(patient_id=t.patient, upload_id=t.export_job, job_id=t.analysis_job, name=t.analysis_file),
        kwargs), targeted=False)
       for method, path, kwargs in (
           ("GET", "/app", {}), ("GET", "/app/login", {}), ("GET", "/app/login/oidc", {}),
           ("GET", "/app/login/oidc/callback", {"params": {"state": "x", "code": "y"}}), ("GET", "/app/account", {}), ("GET", "/app/quality", {}),
           ("POST", "/app/account/totp", {"data": {"csrf": "x", "action": "off"}}),
           ("POST", "/app/login", {"data": {"email": "nobody@example.org", "password": "wrong password"}}),
           ("POST", "/app/logout", {"data": {"csrf": "x"}}), ("GET", "/app/setup", {"params": {"token": "x"}}),
           ("POST", "/app/setup", {"data": {"token": "x", "password": "p" * 12, "repeat": "p" * 12}}),
           ("GET", "/app/static/{name}", {}), ("GET", "/app/patients", {}), ("GET", "/app/patients/{patient_id}", {}),
           ("GET", "/app/imports", {}), ("POST", "/app/imports", {"data": {"csrf": "x", "mapping": "site-registry"}}),
           ("POST", "/app/imports/{upload_id}/commit", {"data": {"csrf": "x"}}),
           ("POST", "/app/imports/{upload_id}/cancel", {"data": {"csrf": "x"}}),
           ("GET", "/app/imports/{upload_id}/report.csv", {}), ("GET", "/app/imports/{upload_id}/changes.csv", {}),
           ("GET", "/app/cohorts", {}),
           ("POST", "/app/cohorts/export", {"data": {"csrf": "x", "cohort": "_all"}}),
           ("GET", "/app/exports/{job_id}", {}), ("GET", "/app/exports/{job_id}/{name}", {}),
           ("GET", "/app/admin/people", {}), ("POST", "/app/admin/people", {"data": {"csrf": "x", "email": "e@x.org"}}),
           ("POST", "/app/admin/people/state", {"data": {"csrf": "x", "email": "e@x.org", "action": "disable"}}),
           ("GET", "/app/admin/clients", {}), ("GET", "/app/admin/jobs", {}), ("GET", "/app/admin/audit", {}),
           ("POST", "/app/admin/jobs/bulk/{job_id}/cancel", {"data": {"csrf": "x"}}),
           ("POST", "/app/admin/jobs/analysis/{job_id}/cancel", {"data": {"csrf": "x"}}))},
}


def app_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, through included routers."""
    found: set[tuple[str, str]] = set()

    def walk(routes: list) -> None:
        for route in routes:
            if hasattr(route, "original_router"):
                walk(route.original_router.routes)
            elif hasattr(route, "routes"):
                walk(route.routes)
            else:
                found.update((m, route.path) for m in route.methods or () if m != "HEAD" or route.path.endswith("{res_id}"))
    walk(app.routes)
    return found


# --- the world -----------------------------------------------------------------------------------


@dataclass
class World:
    root: str
    marker_a: str
    marker_b: str
    site_a: str
    site_b: str
    sessions: dict[str, httpx.Client]  # base: the server root (recipes name whole paths)
    fhir: dict[str, httpx.Client]  # base: the FHIR base
    targets: dict[str, SiteIds]
    b_versions: dict[str, int] = field(default_factory=dict)


def _wait(http: httpx.Client, url: str) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        answer = http.get(url)
        if answer.status_code != 202 or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def _site_data(http: httpx.Client, marker: str, system: str) -> dict[str, str]:
    """A patient with an observation and a TWSTRS response, a deleted patient, a Group, a finished export."""
    value = uuid.uuid4().hex
    patient = http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": marker}],
                                          "identifier": [{"system": system, "value": value}]}).json()
    http.post("/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": marker},
                                    "subject": {"reference": f"Patient/{patient['id']}"}})
    response = http.post("/QuestionnaireResponse", json=response_for(patient["id"]))
    assert response.status_code == 201, response.text
    deleted = http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": marker}]}).json()
    http.put(f"/Patient/{deleted['id']}", json={**deleted, "active": True})
    assert http.delete(f"/Patient/{deleted['id']}").status_code == 200
    group = http.post("/Group", json={"resourceType": "Group", "type": "person", "actual": True, "name": marker,
                                      "member": [{"entity": {"reference": f"Patient/{patient['id']}"}}]}).json()
    kick = http.get(f"/Group/{group['id']}/$export", headers=ASYNC)
    assert kick.status_code == 202, kick.text
    manifest = _wait(http, kick.headers["Content-Location"]).json()
    job = kick.headers["Content-Location"].rsplit("/", 1)[1]
    terminology = _terminology(http, marker, f"{system}:cs:{uuid.uuid4().hex}")
    upload = "\n".join([json.dumps({"resourceType": "Patient", "id": uuid.uuid4().hex, "name": [{"family": marker}]}),
                        json.dumps({"resourceType": "Patient", "name": [{"family": marker}], "gender": marker})]).encode()
    imported = http.post("/$import", headers=ASYNC | NDJSON, content=upload)
    assert imported.status_code == 202, imported.text
    import_manifest = _wait(http, imported.headers["Content-Location"]).json()
    assert import_manifest["output"][0]["count"] == 1, import_manifest
    return {**terminology, "import_job": imported.headers["Content-Location"].rsplit("/", 1)[1],
            "import_file": import_manifest["error"][0]["url"].rsplit("/", 1)[1], "patient": patient["id"], "deleted": deleted["id"], "group": group["id"],
            "response": response.json()["id"], "export_job": job,
            "export_file": manifest["output"][0]["url"].rsplit("/", 1)[1], "identifier": f"{system}|{value}"}


def _terminology(http: httpx.Client, marker: str, url: str) -> dict[str, str]:
    """A CodeSystem, a ValueSet of it and a ConceptMap from it, stored by the site."""
    codesystem = http.post("/CodeSystem", json={"resourceType": "CodeSystem", "url": url, "status": "active",
                                                "content": "complete", "name": marker,
                                                "concept": [{"code": "c1", "display": marker}]}).json()
    valueset = http.post("/ValueSet", json={"resourceType": "ValueSet", "url": f"{url}:vs", "status": "active",
                                            "compose": {"include": [{"system": url}]}}).json()
    conceptmap = http.post("/ConceptMap", json={"resourceType": "ConceptMap", "url": f"{url}:cm", "status": "active",
                                                "group": [{"source": url, "target": "urn:x", "element": [
                                                    {"code": "c1", "target": [{"code": "x1", "equivalence": "equal"}]}]}]})
    assert conceptmap.status_code == 201, conceptmap.text
    return {"codesystem": codesystem["id"], "valueset": valueset["id"], "conceptmap": conceptmap.json()["id"],
            "codesystem_url": url}


@pytest.fixture(scope="module")
def world(secure_server) -> Iterator[World]:
    store = Store(secure_server.database.engine)
    token_url = secure_server.root + "/auth/token"
    suffix = uuid.uuid4().hex[:8]
    site_a, site_b = f"MA{suffix}", f"MB{suffix}"
    clients = two_sites_and_roles(store, token_url, site_a, site_b)
    sessions = {name: c.http(secure_server.root) for name, c in clients.items()}
    sessions["none"] = httpx.Client(base_url=secure_server.root, timeout=30)
    fhir = {name: c.http(secure_server.base) for name, c in clients.items()}
    system = f"urn:matrix:{suffix}"
    a = _site_data(fhir["a"], f"markA{suffix}", system)
    b = _site_data(fhir["b"], f"markB{suffix}", system)
    kick = sessions["analyst"].get(f"/fhir/Group/{b['group']}/$analysis-export", headers=ASYNC)
    assert kick.status_code == 202, kick.text
    manifest = _wait(sessions["analyst"], kick.headers["Content-Location"]).json()
    analysis = {"analysis_job": kick.headers["Content-Location"].rsplit("/", 1)[1],
                "analysis_file": manifest["output"][0]["url"].rsplit("/", 1)[1]}

    def unknown() -> SiteIds:
        never = {k: uuid.uuid4().hex for k in ("patient", "deleted", "group", "response", "export_job", "analysis_job",
                                               "codesystem", "valueset", "conceptmap", "codesystem_url", "import_job")}
        return SiteIds("unknown", export_file="Patient.1.ndjson", import_file="errors-0.ndjson", analysis_file=analysis["analysis_file"],
                       identifier=f"{system}|{uuid.uuid4().hex}", **never)

    targets = {
        "own": SiteIds("own", analysis_job=uuid.uuid4().hex, analysis_file=analysis["analysis_file"], **a),
        "other": SiteIds("other", **analysis, **b),
        "unknown": unknown(),
    }
    w = World(secure_server.root, f"markA{suffix}", f"markB{suffix}", site_a, site_b, sessions, fhir, targets)
    w.b_versions = b_versions(w)
    try:
        yield w
    finally:
        for session in [*sessions.values(), *fhir.values()]:
            session.close()


def b_versions(world: World) -> dict[str, int]:
    """How many versions each of site B's resources has (read by the admin)."""
    b = world.targets["other"]
    refs = [f"Patient/{b.patient}", f"Patient/{b.deleted}", f"Group/{b.group}", f"QuestionnaireResponse/{b.response}"]
    return {ref: world.fhir["admin"].get(f"/{ref}/_history").json()["total"] for ref in refs}


def call(world: World, who: str, key: tuple[str, str], targets: SiteIds) -> httpx.Response:
    """One request; an export kick-off refused because the server's job slots are busy (429) is
    sent again after its Retry-After, as a client would."""
    method, _ = key
    url, kwargs = RECIPES[key].build(targets)
    for _ in range(30):
        answer = world.sessions[who].request(method, url, **kwargs)
        if answer.status_code != 429 or ("export" not in url and "$import" not in url):
            return answer
        time.sleep(float(answer.headers.get("Retry-After", "1")))
    return answer


def _follow(world: World, who: str, answer: httpx.Response) -> list[httpx.Response]:
    """An accepted export's status, manifest and every file: all of it is an answer to the caller."""
    location = answer.headers.get("Content-Location")
    if answer.status_code != 202 or not location:
        return []
    http = world.sessions[who]
    done = _wait(http, location)
    found = [done]
    if done.status_code == 200:
        found += [http.get(url) for url in _output_urls(done.json())]
    return found


def _output_urls(manifest: dict) -> list[str]:
    """The files of a Bulk Data manifest, or of a ``$viewdefinition-export``'s Parameters."""
    if manifest.get("resourceType") == "Parameters":
        return [part["valueUri"] for p in manifest["parameter"] if p["name"] == "output"
                for part in p["part"] if part["name"] == "location"]
    return [item["url"] for item in manifest.get("output", []) + manifest.get("error", [])
            if "url" in item]  # an import's output names the inputs it loaded, not files of its own


def _b_traces(world: World, text: str) -> list[str]:
    return [t for t in (world.marker_b, world.site_b) if t in text]


# --- the tests -----------------------------------------------------------------------------------


def test_every_route_has_an_access_recipe(secure_server) -> None:
    served = app_routes(secure_server.app)
    assert served - set(RECIPES) == set(), "a route without an access rule in this matrix"
    assert set(RECIPES) - served == set(), "a recipe for a route that no longer exists"


@pytest.mark.parametrize("key", sorted(RECIPES), ids="{0[0]} {0[1]}".format)
def test_without_a_token_only_public_routes_answer(world: World, key: tuple[str, str]) -> None:
    answer = call(world, "none", key, world.targets["other"])
    if key[1] in CONSOLE_PUBLIC:
        assert answer.status_code < 500
    elif key[1].startswith("/app"):  # a console page without a session: to the login page, nothing else
        assert answer.status_code == 303 and answer.headers["location"].startswith("/app/login"), answer.text
    elif key[1] in PUBLIC:
        assert answer.status_code < 500
    else:
        assert answer.status_code == 401, answer.text
        assert world.marker_b not in answer.text and world.marker_a not in answer.text


@pytest.mark.parametrize("key", sorted(RECIPES), ids="{0[0]} {0[1]}".format)
def test_a_site_sees_nothing_of_another_site_and_its_ids_do_not_exist(world: World, key: tuple[str, str]) -> None:
    recipe = RECIPES[key]
    on_other = call(world, "a", key, world.targets["other"])
    answers = [on_other, *_follow(world, "a", on_other)]
    if recipe.targeted:
        on_unknown = call(world, "a", key, world.targets["unknown"])
        answers += [on_unknown, *_follow(world, "a", on_unknown)]
        assert on_other.status_code == on_unknown.status_code, (on_other.text, on_unknown.text)
        if recipe.compare_body:
            assert _without_ids(on_other.text, world.targets["other"]) == _without_ids(on_unknown.text, world.targets["unknown"])
    for answer in answers:
        assert answer.status_code < 500, answer.text
        if key[1].startswith("/app") and key[1] not in CONSOLE_PUBLIC:  # a bearer token opens no console page
            assert answer.status_code == 303, answer.text
        assert _b_traces(world, answer.text) == [], (key, answer.request.url, answer.text[:2000])


@pytest.mark.parametrize("key", sorted(RECIPES), ids="{0[0]} {0[1]}".format)
def test_a_sites_own_reads_work_through_every_recipe(world: World, key: tuple[str, str]) -> None:
    """The recipes name real data: on its own ids, site A's reads succeed (so the matrix cannot pass
    by asking for nothing)."""
    method, path = key
    if method not in ("GET", "HEAD") or not RECIPES[key].targeted or "_analysis" in path or "analysis-export" in path:
        return
    answer = call(world, "a", key, world.targets["own"])
    assert answer.status_code in (200, 202, 410), (key, answer.text)
    if method == "GET" and "$" not in path and "_" not in path.removeprefix("/fhir/{res_type}"):
        assert world.marker_a in answer.text, (key, answer.text[:500])


def _without_ids(text: str, targets: SiteIds) -> str:
    for name in ("patient", "deleted", "group", "response", "export_job", "analysis_job", "import_job", "identifier",
                 "codesystem", "valueset", "conceptmap", "codesystem_url"):
        text = text.replace(getattr(targets, name), f"<{name}>")
    return text


@pytest.mark.parametrize("who", ["admin", "analyst", "b"])
def test_no_caller_gets_a_server_error_on_any_route(world: World, who: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in sorted(RECIPES):
        for kind in ("own", "other", "unknown"):
            if who != "analyst" and key[0] in ("PUT", "PATCH", "DELETE") and kind != "unknown":
                continue  # the admin (and B, on its own data) may change it; it stays as the matrix needs it
            answer = call(world, who, key, world.targets[kind])
            assert answer.status_code < 500, (who, key, kind, answer.text)
            for followed in _follow(world, who, answer):
                assert followed.status_code < 500, (who, key, kind, followed.text)


def _deidentified(path: str) -> bool:
    """Routes an analyst uses through a de-identification policy."""
    return "analysis" in path or "ViewDefinition" in path or "viewdefinition" in path


def test_an_analyst_reads_no_resource(world: World) -> None:
    for key in sorted(RECIPES):
        if _deidentified(key[1]) or key[1] in PUBLIC or key[1].startswith("/app"):
            continue  # console pages need a person's session (tests/api/test_console.py)
        for kind in ("own", "other"):
            answer = call(world, "analyst", key, world.targets[kind])
            if answer.status_code == 200 and answer.json().get("type") == "batch-response":  # refused entry by entry
                assert {e["response"]["status"] for e in answer.json()["entry"]} == {"403"}, answer.text
            else:
                assert answer.status_code in (403, 404), (key, kind, answer.status_code, answer.text)
            assert world.marker_a not in answer.text and world.marker_b not in answer.text


def test_an_analysts_views_hold_no_identifier_of_either_site(world: World) -> None:
    """The view routes answer an analyst through the policy: rows, yes; names and server ids, never."""
    for key in sorted(RECIPES):
        if "iewDefinition" not in key[1] and "viewdefinition" not in key[1]:
            continue
        for kind in ("own", "other"):
            answer = call(world, "analyst", key, world.targets[kind])
            assert answer.status_code in (200, 202), (key, kind, answer.text)
            for text in [answer.text, *(a.text for a in _follow(world, "analyst", answer))]:
                leaked = [v for t in world.targets.values() for v in (t.patient, t.deleted) if v in text]
                assert leaked == [] and world.marker_a not in text and world.marker_b not in text, (key, text[:500])


def test_site_a_writes_aimed_at_site_b_changed_nothing(world: World) -> None:
    """Runs after the matrix above: B's resources have exactly the versions they had."""
    for key in RECIPES:
        if key[0] in ("PUT", "PATCH", "DELETE", "POST"):
            call(world, "a", key, world.targets["other"])
    assert b_versions(world) == world.b_versions
    other = world.targets["other"]
    assert world.fhir["b"].get(f"/_export/{other.export_job}").status_code == 200
    assert world.fhir["b"].get(f"/_import/{other.import_job}").status_code == 200
    assert world.fhir["b"].get(f"/_import/{other.import_job}/{other.import_file}").status_code == 200
    assert world.fhir["b"].get(f"/Patient/{other.patient}").status_code == 200
