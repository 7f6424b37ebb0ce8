"""Bad input on every route, the route list taken from the app itself: a route the app serves that
has no shape here (and no reasoned exemption) fails ``test_every_route_is_fuzzed``, so the next
endpoint cannot slip past the rule that bad input never hurts.

Each route has a *shape*: who calls it, its path parameters (by the kind of id they name), a
well-formed query and body. The families of bad requests are generated from the shape: odd path
parameters and another site's ids in them; bad query values (huge, negative, NaN, NULs, wrong
names); malformed, truncated and wrongly typed bodies (every element given each wrong JSON type),
wrong content types; missing and forged credentials (tokens signed with another key or none,
claiming another site or the admin role; for the console: forged cookies, CSRF tokens, origins).

Sent as site A's clients and people (authentication on) on SQLite and PostgreSQL, what holds for
every answer: no 5xx, no dropped connection, every ``/fhir`` error an OperationOutcome, a refused
request writes nothing, nothing of site B's (its marker, its label) reaches anyone but B and the
admin, and at the end B's resources have exactly the versions they had. Each run draws its own
seed (``FHIRFUS_FUZZ_SEED`` repeats one); a failure names it.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth_helpers import SiteIds, two_sites_and_roles
from starlette.routing import Mount

from fhirfus.api.console.web import COOKIE
from fhirfus.store.repository import Store
from tests.api.test_bad_input_fuzz import URL_IDS, WRONG_VALUES, Answer, Request, _nested, _paths, _replaced, send_raw
from tests.api.test_console import PASSWORD, person
from tests.auth.test_access_matrix import _site_data, _wait
from tests.domain.test_domain_writes import response_for

SITE_FILE = Path(__file__).resolve().parents[3] / "shared" / "data" / "site-registry" / "example-site-a.csv"
#: Requests drawn per route and family (a family with fewer cases sends them all).
PER_FAMILY = 3
ASYNC = {"Prefer": "respond-async"}
JSON = {"Content-Type": "application/fhir+json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NDJSON = {"Content-Type": "application/fhir+ndjson"}

# --- the route table ------------------------------------------------------------------------------


def route_table(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route ``app`` answers: through included routers (with their
    prefixes) and mounted sub-apps. HEAD is kept only where it is a route of its own."""
    found: set[tuple[str, str]] = set()

    def walk(routes: list, prefix: str) -> None:
        for route in routes:
            if hasattr(route, "effective_candidates"):  # FastAPI's included router
                walk(route.effective_candidates(), prefix)
            elif isinstance(route, Mount):
                inner = route.routes or getattr(route.app, "routes", None)
                if inner is None:
                    found.add(("*", prefix + route.path))  # an app without a route table: one opaque target
                else:
                    walk(inner, prefix + route.path)
            else:
                methods = route.methods or {"GET"}
                found.update((m, prefix + route.path) for m in methods if m != "HEAD" or "GET" not in methods
                             or route.path.endswith("{res_id}"))

    walk(app.routes, "")
    return found


# --- shapes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A well-formed call of one route, from which the bad ones are made.

    ``caller``: a (site A's client), admin, analyst, public (no credentials needed); console-site,
    console-analyst, console-admin (a person's session), console-public. ``params``: path parameter
    → kind of id (a key of ``SiteIds``) or a literal after ``=``. ``body``: a JSON document, form fields
    (a dict with ``form=True``) or raw bytes."""

    caller: str
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    form: bool = False
    multipart: bool = False


def _parameters(*pairs: tuple[str, str, object]) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": n, t: v} for n, t, v in pairs]}


_PATIENT_BODY = {"resourceType": "Patient", "name": [{"family": "Route", "given": ["F"]}], "birthDate": "1970-01-01",
                 "identifier": [{"system": "urn:fuzz", "value": "1"}], "active": True,
                 "generalPractitioner": [{"reference": "Patient/{patient}"}]}
_OBSERVATION = {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org",
                "code": "8480-6"}]}, "subject": {"reference": "Patient/{patient}"},
                "valueQuantity": {"value": 120.5, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                                  "code": "mm[Hg]"}, "effectiveDateTime": "2024-01-01T10:00:00Z"}
_BATCH = {"resourceType": "Bundle", "type": "batch", "entry": [
    {"request": {"method": "GET", "url": "Patient/{patient}"}},
    {"resource": _OBSERVATION, "request": {"method": "POST", "url": "Observation"}},
    {"request": {"method": "DELETE", "url": "Observation?subject=Patient/{patient}&code=none"}}]}
_PATCH = [{"op": "replace", "path": "/active", "value": False}]
_VIEW = {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
         "select": [{"column": [{"name": "id", "path": "getResourceKey()"}, {"name": "birth", "path": "birthDate"}]}]}
_VIEW_RUN = {"resourceType": "Parameters", "parameter": [{"name": "viewResource", "resource": _VIEW},
                                                          {"name": "_format", "valueCode": "json"},
                                                          {"name": "patient", "valueReference": {"reference": "Patient/{patient}"}},
                                                          {"name": "_limit", "valueInteger": 5}]}
_VIEW_EXPORT = {"resourceType": "Parameters", "parameter": [
    {"name": "view", "part": [{"name": "viewReference", "valueString": "analysis_patient"}]},
    {"name": "_format", "valueCode": "ndjson"}, {"name": "group", "valueString": "{group}"}]}
_IMPORT = {"resourceType": "Parameters", "parameter": [
    {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
    {"name": "input", "part": [{"name": "type", "valueCode": "Patient"}, {"name": "url", "valueUrl": "http://127.0.0.1:9/x.ndjson"}]}]}
_EXPORT = _parameters(("_type", "valueString", "Patient,Observation"), ("_since", "valueInstant", "2020-01-01T00:00:00Z"),
                      ("patient", "valueReference", {"reference": "Patient/{patient}"}))
_TERMINOLOGY = {
    "ValueSet/$expand": {"url": "https://fhirfus.org/fhir/ValueSet/mrgfus-target", "filter": "oral", "count": "5",
                         "offset": "0"},
    "ValueSet/$validate-code": {"url": "https://fhirfus.org/fhir/ValueSet/mrgfus-target", "code": "vim",
                                "system": "https://fhirfus.org/fhir/CodeSystem/mrgfus-target"},
    "CodeSystem/$lookup": {"system": "https://fhirfus.org/fhir/CodeSystem/cd-subtype", "code": "laterocollis"},
    "CodeSystem/$validate-code": {"url": "https://fhirfus.org/fhir/CodeSystem/cd-subtype", "code": "laterocollis"},
    "CodeSystem/$subsumes": {"system": "https://fhirfus.org/fhir/CodeSystem/cd-subtype", "codeA": "laterocollis",
                             "codeB": "laterocollis"},
    "ConceptMap/$translate": {"system": "https://fhirfus.org/fhir/CodeSystem/cd-subtype", "code": "laterocollis"},
}
_INSTANCE_TERMINOLOGY = {"ValueSet/{res_id}/$expand": ("valueset", {"count": "3"}),
                         "ValueSet/{res_id}/$validate-code": ("valueset", {"code": "c1"}),
                         "CodeSystem/{res_id}/$validate-code": ("codesystem", {"code": "c1"}),
                         "ConceptMap/{res_id}/$translate": ("conceptmap", {"code": "c1", "system": "{codesystem_url}"})}


def _terminology_shapes() -> dict[tuple[str, str], Shape]:
    shapes: dict[tuple[str, str], Shape] = {}
    for path, query in _TERMINOLOGY.items():
        body = {"resourceType": "Parameters", "parameter": [{"name": k, "valueString": v} for k, v in query.items()]}
        shapes["GET", f"/fhir/{path}"] = Shape("a", query=query)
        shapes["POST", f"/fhir/{path}"] = Shape("a", body=body, headers=JSON)
    for path, (kind, query) in _INSTANCE_TERMINOLOGY.items():
        shapes["GET", f"/fhir/{path}"] = Shape("a", {"res_id": kind}, query=query)
        shapes["POST", f"/fhir/{path}"] = Shape("a", {"res_id": kind}, query=query)
    return shapes


def _view_shapes() -> dict[tuple[str, str], Shape]:
    shapes: dict[tuple[str, str], Shape] = {}
    for path in ("/fhir/$viewdefinition-run", "/fhir/ViewDefinition/$run"):
        shapes["GET", path] = Shape("a", query={"viewReference": "analysis_patient", "_format": "json", "_limit": "5"})
        shapes["POST", path] = Shape("a", body=_VIEW_RUN, headers=JSON)
    shapes["GET", "/fhir/ViewDefinition/{view_id}/$run"] = Shape("a", {"view_id": "=analysis_patient"},
                                                                 query={"_format": "csv", "header": "true"})
    shapes["POST", "/fhir/ViewDefinition/{view_id}/$run"] = Shape("a", {"view_id": "=analysis_patient"},
                                                                  body=_parameters(("_format", "valueCode", "ndjson")),
                                                                  headers=JSON)
    for path in ("/fhir/$viewdefinition-export", "/fhir/ViewDefinition/$viewdefinition-export"):
        shapes["POST", path] = Shape("a", body=_VIEW_EXPORT, headers=JSON | ASYNC)
    return shapes


def _console_shapes() -> dict[tuple[str, str], Shape]:
    site, analyst, admin, public = "console-site", "console-analyst", "console-admin", "console-public"
    return {
        ("GET", "/app"): Shape(site),
        ("GET", "/app/login"): Shape(public, query={"next": "/app/patients"}),
        ("POST", "/app/login"): Shape(public, body={"email": "{email}", "password": "wrong password", "next": "/app/x"},
                                      form=True),
        ("GET", "/app/login/oidc"): Shape(public),
        ("GET", "/app/login/oidc/callback"): Shape(public, query={"state": "s", "code": "c"},
                                                   headers={"Cookie": "fhirfus_oidc=e30"}),
        ("POST", "/app/logout"): Shape("console-throwaway", body={"csrf": "{csrf}"}, form=True),
        ("GET", "/app/setup"): Shape(public, query={"token": "x" * 43}),
        ("POST", "/app/setup"): Shape(public, body={"token": "x" * 43, "password": "p" * 12, "repeat": "p" * 12},
                                      form=True),
        ("GET", "/app/account"): Shape(site),
        ("POST", "/app/account/totp"): Shape(site, body={"csrf": "{csrf}", "action": "off", "code": "123456"}, form=True),
        ("GET", "/app/static/{name}"): Shape(public, {"name": "=console.css"}),
        ("GET", "/app/patients"): Shape(site, query={"q": "a", "page": "1"}),
        ("GET", "/app/patients/{patient_id}"): Shape(site, {"patient_id": "patient"}),
        ("GET", "/app/quality"): Shape(site),
        ("GET", "/app/imports"): Shape(site),
        ("POST", "/app/imports"): Shape(site, body={"csrf": "{csrf}", "mapping": "site-registry", "mode": "merge"},
                                        multipart=True),
        ("POST", "/app/imports/{upload_id}/commit"): Shape(site, {"upload_id": "upload"}, body={"csrf": "{csrf}"},
                                                           form=True),
        ("POST", "/app/imports/{upload_id}/cancel"): Shape(site, {"upload_id": "upload"}, body={"csrf": "{csrf}"},
                                                           form=True),
        ("GET", "/app/imports/{upload_id}/changes.csv"): Shape(site, {"upload_id": "upload"}),
        ("GET", "/app/imports/{upload_id}/report.csv"): Shape(site, {"upload_id": "upload"}),
        ("GET", "/app/cohorts"): Shape(analyst),
        ("POST", "/app/cohorts/export"): Shape(analyst, body={"csrf": "{csrf}", "cohort": "{group}", "policy": "safe-harbor",
                                                              "format": "csv"}, form=True),
        ("GET", "/app/exports/{job_id}"): Shape(analyst, {"job_id": "analysis_job"}),
        ("GET", "/app/exports/{job_id}/{name}"): Shape(analyst, {"job_id": "analysis_job", "name": "analysis_file"}),
        ("GET", "/app/admin/people"): Shape(admin),
        ("POST", "/app/admin/people"): Shape(admin, body={"csrf": "{csrf}", "email": "new@example.org", "role": "site",
                                                          "site": "X"}, form=True),
        ("POST", "/app/admin/people/state"): Shape(admin, body={"csrf": "{csrf}", "email": "nobody@example.org",
                                                                "action": "disable"}, form=True),
        ("GET", "/app/admin/clients"): Shape(admin),
        ("GET", "/app/admin/jobs"): Shape(admin, query={"page": "1"}),
        ("GET", "/app/admin/audit"): Shape(admin, query={"q": "Patient", "page": "1"}),
        ("POST", "/app/admin/jobs/bulk/{job_id}/cancel"): Shape(admin, {"job_id": "=" + "0" * 32},
                                                                body={"csrf": "{csrf}"}, form=True),
        ("POST", "/app/admin/jobs/analysis/{job_id}/cancel"): Shape(admin, {"job_id": "=" + "0" * 32},
                                                                    body={"csrf": "{csrf}"}, form=True),
    }


#: (method, route path) → its shape. Every route of the app is here or in ``EXEMPT``.
SHAPES: dict[tuple[str, str], Shape] = {
    ("GET", "/openapi.json"): Shape("public"),
    ("GET", "/docs"): Shape("public"),
    ("GET", "/docs/oauth2-redirect"): Shape("public"),
    ("GET", "/redoc"): Shape("public"),
    ("POST", "/auth/token"): Shape("public", body={"grant_type": "client_credentials", "scope": "system/*.rs",
                                                   "client_assertion_type":
                                                       "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                                                   "client_assertion": "{token}"}, form=True),
    ("GET", "/fhir/.well-known/smart-configuration"): Shape("public"),
    ("GET", "/fhir/metadata"): Shape("public", query={"mode": "full", "_summary": "true"}),
    ("GET", "/fhir/_history"): Shape("a", query={"_count": "5", "_since": "2020-01-01"}),
    ("GET", "/fhir/"): Shape("a", query={"_type": "Patient", "_id": "{patient}"}),
    ("GET", "/fhir"): Shape("a", query={"_type": "Patient,Observation", "_count": "5"}),
    ("POST", "/fhir/_search"): Shape("a", body={"_type": "Patient", "_id": "{patient}"}, form=True),
    ("POST", "/fhir/$validate"): Shape("a", body=_PATIENT_BODY, headers=JSON),
    ("POST", "/fhir/"): Shape("a", body=_BATCH, headers=JSON),
    ("POST", "/fhir"): Shape("a", body={**_BATCH, "type": "transaction"}, headers=JSON),
    ("GET", "/fhir/$export"): Shape("admin", query={"_type": "Patient", "_since": "2020-01-01T00:00:00Z"},
                                    headers=ASYNC),
    ("POST", "/fhir/$export"): Shape("admin", body=_EXPORT, headers=JSON | ASYNC),
    ("GET", "/fhir/Patient/$export"): Shape("a", query={"_type": "Patient", "_elements": "id,name"}, headers=ASYNC),
    ("POST", "/fhir/Patient/$export"): Shape("a", body=_EXPORT, headers=JSON | ASYNC),
    ("GET", "/fhir/Group/{group_id}/$export"): Shape("a", {"group_id": "group"}, query={"_typeFilter": "Patient?active=true"},
                                                     headers=ASYNC),
    ("POST", "/fhir/Group/{group_id}/$export"): Shape("a", {"group_id": "group"}, body=_EXPORT, headers=JSON | ASYNC),
    ("GET", "/fhir/_export/{job_id}"): Shape("a", {"job_id": "export_job"}),
    ("DELETE", "/fhir/_export/{job_id}"): Shape("a", {"job_id": "export_job"}),
    ("GET", "/fhir/_export/{job_id}/{name}"): Shape("a", {"job_id": "export_job", "name": "export_file"}),
    ("POST", "/fhir/$import"): Shape("a", body=_IMPORT, headers=JSON | ASYNC),
    ("GET", "/fhir/_import/{job_id}"): Shape("a", {"job_id": "import_job"}),
    ("DELETE", "/fhir/_import/{job_id}"): Shape("a", {"job_id": "import_job"}),
    ("GET", "/fhir/_import/{job_id}/{name}"): Shape("a", {"job_id": "import_job", "name": "import_file"}),
    ("GET", "/fhir/$analysis-export"): Shape("analyst", query={"_outputFormat": "csv", "policy": "safe-harbor"},
                                             headers=ASYNC),
    ("GET", "/fhir/Group/{group_id}/$analysis-export"): Shape("analyst", {"group_id": "group"},
                                                              query={"_outputFormat": "csv"}, headers=ASYNC),
    ("GET", "/fhir/_analysis/{job_id}"): Shape("analyst", {"job_id": "analysis_job"}),
    ("DELETE", "/fhir/_analysis/{job_id}"): Shape("analyst", {"job_id": "=" + "0" * 32}),
    ("GET", "/fhir/_analysis/{job_id}/{name}"): Shape("analyst", {"job_id": "analysis_job", "name": "analysis_file"}),
    ("GET", "/fhir/_pulls"): Shape("admin", query={"source": "x"}),
    **_terminology_shapes(),
    **_view_shapes(),
    ("GET", "/fhir/{res_type}"): Shape("a", {"res_type": "=Observation"},
                                       query={"subject": "Patient/{patient}", "_include": "Observation:subject",
                                              "value-quantity": "gt100", "_count": "3", "_sort": "-date"}),
    ("POST", "/fhir/{res_type}/_search"): Shape("a", {"res_type": "=Patient"}, body={"_id": "{patient}", "_count": "2",
                                                                                      "_revinclude": "Observation:subject"},
                                                form=True),
    ("POST", "/fhir/{res_type}"): Shape("a", {"res_type": "=Observation"}, body=_OBSERVATION,
                                        headers=JSON | {"If-None-Exist": "identifier=urn:fuzz|nothing"}),
    ("PUT", "/fhir/{res_type}"): Shape("a", {"res_type": "=Patient"}, query={"identifier": "urn:fuzz|conditional"},
                                       body=_PATIENT_BODY, headers=JSON),
    ("DELETE", "/fhir/{res_type}"): Shape("a", {"res_type": "=Patient"}, query={"identifier": "urn:fuzz|nobody"}),
    ("POST", "/fhir/{res_type}/$validate"): Shape("a", {"res_type": "=Patient"},
                                                  body={"resourceType": "Parameters", "parameter": [
                                                      {"name": "resource", "resource": _PATIENT_BODY},
                                                      {"name": "mode", "valueCode": "create"}]}, headers=JSON),
    ("POST", "/fhir/{res_type}/{res_id}/$validate"): Shape("a", {"res_type": "=Patient", "res_id": "patient"},
                                                           query={"mode": "update"}, body=_PATIENT_BODY, headers=JSON),
    ("POST", "/fhir/QuestionnaireResponse/$extract"): Shape("a", body="{response_body}", headers=JSON),
    ("GET", "/fhir/QuestionnaireResponse/{res_id}/$extract"): Shape("a", {"res_id": "response"}),
    ("POST", "/fhir/QuestionnaireResponse/{res_id}/$extract"): Shape("a", {"res_id": "response"}),
    ("GET", "/fhir/Patient/{res_id}/$everything"): Shape("a", {"res_id": "patient"}, query={"_count": "5",
                                                                                              "_since": "2020-01-01"}),
    ("GET", "/fhir/{res_type}/_history"): Shape("a", {"res_type": "=Patient"}, query={"_count": "5"}),
    ("GET", "/fhir/{res_type}/{res_id}"): Shape("a", {"res_type": "=Patient", "res_id": "patient"},
                                                query={"_elements": "name"}),
    ("HEAD", "/fhir/{res_type}/{res_id}"): Shape("a", {"res_type": "=Patient", "res_id": "patient"}),
    ("PUT", "/fhir/{res_type}/{res_id}"): Shape("a", {"res_type": "=Patient", "res_id": "patient"},
                                                body={**_PATIENT_BODY, "id": "{patient}"}, headers=JSON),
    ("PATCH", "/fhir/{res_type}/{res_id}"): Shape("a", {"res_type": "=Patient", "res_id": "patient"}, body=_PATCH,
                                                  headers={"Content-Type": "application/json-patch+json"}),
    ("DELETE", "/fhir/{res_type}/{res_id}"): Shape("a", {"res_type": "=Observation", "res_id": "patient"}),
    ("GET", "/fhir/{res_type}/{res_id}/_history"): Shape("a", {"res_type": "=Patient", "res_id": "deleted"}),
    ("GET", "/fhir/{res_type}/{res_id}/_history/{version_id}"): Shape(
        "a", {"res_type": "=Patient", "res_id": "deleted", "version_id": "=1"}),
    **_console_shapes(),
}

#: Routes the fuzz leaves alone, each with its reason (none today: a new one needs a good one).
EXEMPT: dict[tuple[str, str], str] = {}


# --- the world: two sites, their data, their callers ------------------------------------------------


@dataclass
class World:
    root: str
    store: Store
    marker_b: str
    site_b: str
    own: SiteIds
    other: SiteIds
    clients: dict[str, Any]
    people: dict[str, str]  # console role → email
    b_fhir: httpx.Client
    admin_fhir: httpx.Client
    b_versions: dict[str, int] = field(default_factory=dict)


def _upload(root: str, email: str) -> str:
    """A site file previewed (not committed) in the console by ``email``: its upload id."""
    with httpx.Client(base_url=root, timeout=60) as http:
        assert http.post("/app/login", data={"email": email, "password": PASSWORD}).status_code == 303
        if not SITE_FILE.exists():
            return uuid.uuid4().hex
        token = re.search(r'name="csrf" value="([^"]+)"', http.get("/app/imports").text).group(1)  # type: ignore[union-attr]
        preview = http.post("/app/imports", data={"csrf": token, "mapping": "site-registry"},
                            files={"file": (SITE_FILE.name, SITE_FILE.read_bytes(), "text/csv")})
        found = re.search(r"/app/imports/([0-9a-f]{32})/commit", preview.text)
        assert found, preview.text[:1000]
        return found.group(1)


@pytest.fixture(scope="module")
def world(secure_server: Any) -> Iterator[World]:
    store = Store(secure_server.database.engine)
    token_url = secure_server.root + "/auth/token"
    suffix = uuid.uuid4().hex[:8]
    site_a, site_b = f"FA{suffix}", f"FB{suffix}"
    clients = two_sites_and_roles(store, token_url, site_a, site_b)
    fhir = {name: c.http(secure_server.base) for name, c in clients.items()}
    system = f"urn:routes:{suffix}"
    marker_a, marker_b = f"routeA{suffix}", f"routeB{suffix}"
    a, b = _site_data(fhir["a"], marker_a, system), _site_data(fhir["b"], marker_b, system)
    group = fhir["b"].get(f"/Group/{b['group']}").json()  # analysts see cohort names by design: not the marker
    assert fhir["b"].put(f"/Group/{b['group']}", json={**group, "name": f"cohort {suffix}"}).status_code == 200
    kick = fhir["analyst"].get(f"/Group/{b['group']}/$analysis-export", headers=ASYNC)
    assert kick.status_code == 202, kick.text
    manifest = _wait(fhir["analyst"], kick.headers["Content-Location"]).json()
    analysis = {"analysis_job": kick.headers["Content-Location"].rsplit("/", 1)[1],
                "analysis_file": manifest["output"][0]["url"].rsplit("/", 1)[1]}
    people_ = {"console-site": person(store, "site", site_a), "console-analyst": person(store, "analyst"),
               "console-admin": person(store, "admin"), "console-b": person(store, "site", site_b)}
    own = SiteIds("own", **a, upload=_upload(secure_server.root, people_["console-site"]),
                  analysis_job=uuid.uuid4().hex, analysis_file=analysis["analysis_file"])
    other = SiteIds("other", **b, upload=_upload(secure_server.root, people_["console-b"]), **analysis)
    w = World(secure_server.root, store, marker_b, site_b, own, other, clients, people_, fhir["b"], fhir["admin"])
    w.b_versions = _b_versions(w)
    try:
        yield w
    finally:
        for http in fhir.values():
            http.close()


def _b_versions(world: World) -> dict[str, int]:
    b = world.other
    refs = [f"Patient/{b.patient}", f"Patient/{b.deleted}", f"Group/{b.group}", f"QuestionnaireResponse/{b.response}",
            f"CodeSystem/{b.codesystem}", f"ValueSet/{b.valueset}", f"ConceptMap/{b.conceptmap}"]
    return {ref: world.admin_fhir.get(f"/{ref}/_history").json()["total"] for ref in refs}


@dataclass
class Credentials:
    """Headers that make each caller, and the forged ones a request may carry instead."""

    headers: dict[str, dict[str, str]]
    csrf: dict[str, str]
    forged: list[dict[str, str]]
    token_of_a: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged_tokens(token: str, site_b: str) -> list[str]:
    """A's access token re-signed with another key or none, claiming site B or the admin role; cut; garbage."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = []
    for change in ({"site": site_b}, {"role": "admin", "site": None}, {"exp": 1}, {"scope": "system/*.*"}):
        body = _b64(json.dumps({**claims, **change}).encode())
        forged.append(f"{header}.{body}.{signature}")  # claims changed, A's signature kept
        forged.append(f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{body}.")
    return [*forged, token[:-5], token + "x", "%00", "", "a.b.c", "x" * 5000]


def _login(root: str, email: str) -> tuple[str, str]:
    """(session cookie, CSRF token) of a person's console session."""
    with httpx.Client(base_url=root, timeout=60) as http:
        answer = http.post("/app/login", data={"email": email, "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        page = http.get("/app/account")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found, page.text[:500]
        return http.cookies[COOKIE], found.group(1)


def credentials(world: World) -> Credentials:
    headers: dict[str, dict[str, str]] = {"public": {}, "console-public": {}}
    tokens = {name: world.clients[name].token() for name in ("a", "admin", "analyst")}
    for name, token in tokens.items():
        headers[name] = {"Authorization": f"Bearer {token}"}
    csrf = {}
    for role in ("console-site", "console-analyst", "console-admin"):
        cookie, csrf[role] = _login(world.root, world.people[role])
        headers[role] = {"Cookie": f"{COOKIE}={cookie}"}
    headers["console-throwaway"] = {"Cookie": f"{COOKIE}={THROWAWAY}"}
    csrf["console-throwaway"] = THROWAWAY
    forged = [{"Authorization": f"Bearer {t}"} for t in _forged_tokens(tokens["a"], world.site_b)]
    forged += [{"Authorization": "Basic YTpi"}, {"Authorization": "Bearer"}, {"Authorization": tokens["a"]}]
    return Credentials(headers, csrf, forged, tokens["a"])


# --- the families of bad requests ------------------------------------------------------------------

#: Odd values for path parameters (percent-encoded, as a client puts them in a URL).
ODD_PATH = (*URL_IDS, "0", "-1", "NaN", "1e309", "Patient", "AuditEvent", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd",
            "x.ndjson", "..")
#: Odd resource types for ``{res_type}``: unknown, wrong case, not-R4, the server's own bookkeeping ones.
ODD_TYPES = ("Nothing", "patient", "AuditEvent", "Subscription", "Binary", "ViewDefinition", "Bundle", "_history",
             "%00", "Resource", "DomainResource", "Parameters", "OperationOutcome", "Provenance")
#: Bad values for any query parameter.
ODD_VALUES = ("-1", "0", "NaN", "Infinity", "1e309", "99999999999999999999", "1.5", "", "%00", "%FF", "%ZZ",
              "x" * 3000, "true", "gt", "a,b,c", "|", "$", "null", "[]", "{}", "2020-13-45", "%ED%A0%80")
#: Bad whole parameters.
ODD_PIECES = ("_count=-1", "_count=NaN", "_count=1e309", "_count=99999999999999999999", "_since=nonsense",
              "_since=99999-01-01", "_type=%00", "_type=Nothing", "_outputFormat=text/x", "_elements=%00",
              "_summary=x", "_format=%00", "_format=xml", "_pretty=x", "_total=x", "_sort=%00", "_include=x:y:z",
              "_revinclude=%00", "patient=Patient/%00", "_typeFilter=Patient?%00", "_typeFilter=Nothing?x=1",
              "_limit=-1", "_limit=1e400", "page=-1", "page=NaN", "page=99999999999999999999", "offset=-1",
              "count=NaN", "mode=%00", "mode=delete", "next=//evil.example", "next=%00", "=x", "&&&", "x", "policy=..",
              "policy=%00", "header=maybe", "_id=" + "x" * 2000, "includeAssociatedData=x", "group=%00")
#: Content types a body may come in with that do not match it.
ODD_CONTENT_TYPES = ("text/plain", "application/fhir+xml", "application/x-www-form-urlencoded", "multipart/form-data",
                     "multipart/form-data; boundary=x", "application/fhir+ndjson", "application/json; charset=latin-1",
                     "application/json-patch+json", "", "*/*", "application/octet-stream")
RAW_NUMBERS = (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"-1", b"123456789012345678901234567890",
               b"0.0000000000000000000000000000001", b"1e-400")


def _fill(value: Any, names: dict[str, str]) -> Any:
    """``{patient}`` and friends in a shape's strings replaced by the ids of one site."""
    if isinstance(value, str):
        return value.format_map(names) if "{" in value else value
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


class _Names(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclass
class Case:
    """One bad request and who sends it: ``caller`` decides which answers must not carry B's data."""

    family: str
    caller: str
    request: Request
    fresh_session: bool = False


class Generator:
    """Every family of bad requests for one route, from its shape."""

    def __init__(self, method: str, path: str, shape: Shape, world: World, creds: Credentials) -> None:
        self.method, self.path, self.shape, self.world, self.creds = method, path, shape, world, creds

    def names(self, ids: SiteIds) -> _Names:
        names = _Names({k: str(v) for k, v in vars(ids).items()})
        names["response_body"] = ""
        names["token"] = self.creds.token_of_a
        names["email"] = self.world.people["console-site"]
        names["csrf"] = self.creds.csrf.get(self.shape.caller, "x")
        return names

    def url(self, params: dict[str, str], query: str) -> str:
        path = self.path
        for name, value in params.items():
            path = path.replace("{" + name + "}", value)
        return path + (f"?{query}" if query else "")

    def good_params(self, ids: SiteIds) -> dict[str, str]:
        values = vars(ids)
        return {name: kind[1:] if kind.startswith("=") else str(values[kind]) for name, kind in self.shape.params.items()}

    def good_query(self, names: _Names) -> list[tuple[str, str]]:
        return [(k, _fill(v, names)) for k, v in self.shape.query.items()]

    def body(self, names: _Names) -> Any:
        if self.shape.body == "{response_body}":
            return response_for(names["patient"])
        return _fill(copy.deepcopy(self.shape.body), names)

    def encode(self, body: Any) -> tuple[dict[str, str], bytes | None]:
        if body is None:
            return {}, None
        if self.shape.multipart:
            return _multipart(body, b"patient_id,sex\n1,f\n")
        if self.shape.form:
            return dict(FORM), "&".join(f"{k}={_quote(v)}" for k, v in body.items()).encode()
        return {}, body if isinstance(body, bytes) else json.dumps(body).encode()

    def request(self, query: list[tuple[str, str]] | str, body: Any, *, params: dict[str, str] | None = None,
                headers: dict[str, str] | None = None, raw_body: bytes | None = None, auth: dict[str, str] | None = None,
                ids: SiteIds | None = None) -> Request:
        ids = ids or self.world.own
        text = query if isinstance(query, str) else "&".join(f"{k}={_quote(v)}" for k, v in query)
        type_header, encoded = self.encode(body)
        sent = {**self.shape.headers, **type_header, **(headers or {})}
        sent.update(self.creds.headers.get(self.shape.caller, {}) if auth is None else auth)
        if self.shape.caller.startswith("console") and self.method == "POST":
            sent.setdefault("Origin", self.world.root)
        return Request(self.method, self.url(params or self.good_params(ids), text), sent,
                       raw_body if raw_body is not None else encoded)

    def cases(self, rng: random.Random) -> dict[str, list[Case]]:
        names = self.names(self.world.own)
        query, body = self.good_query(names), self.body(names)
        caller = self.shape.caller
        families: dict[str, list[Request]] = {"path": [], "query": [], "body": [], "auth": [], "site": []}
        for name in self.shape.params:
            odd = ODD_TYPES if name == "res_type" else ODD_PATH
            for value in odd:
                families["path"].append(self.request(query, body, params={**self.good_params(self.world.own),
                                                                          name: value}))
        for piece in ODD_PIECES:
            families["query"].append(self.request([*query, tuple(piece.split("=", 1))] if "=" in piece else
                                                   "&".join([*(f"{k}={_quote(v)}" for k, v in query), piece]), body))
        for index, (key, _) in enumerate(query):
            for value in ODD_VALUES:
                mixed = [*query[:index], (key, value), *query[index + 1:]]
                families["query"].append(self.request(mixed, body))
        if self.method in ("POST", "PUT", "PATCH"):
            families["body"] += list(self.bad_bodies(rng, query, body))
        families["auth"] += self.bad_credentials(query, body)
        if not caller.endswith("admin") and caller not in ("public", "console-public"):
            families["site"] += list(self.other_site(query, body))
        found = {family: [Case(family, caller, r) for r in requests] for family, requests in families.items()}
        if caller == "console-throwaway":
            for cases in found.values():
                for case in cases:
                    case.fresh_session = True
        return found

    def bad_bodies(self, rng: random.Random, query: list[tuple[str, str]], body: Any) -> Iterator[Request]:
        if body is None:
            yield self.request(query, None, raw_body=b'{"resourceType": "Parameters", "parameter": [')
            yield self.request(query, None, raw_body=b"\x00\xff")
            yield self.request(query, None, headers={"Content-Type": "application/fhir+json"}, raw_body=b"[]")
            return
        _, encoded = self.encode(body)
        assert encoded is not None
        for cut in sorted(rng.sample(range(1, len(encoded)), min(4, len(encoded) - 1))):
            yield self.request(query, body, raw_body=encoded[:cut])
        for content_type in ODD_CONTENT_TYPES:
            yield self.request(query, body, headers={"Content-Type": content_type})
        for raw in (b"", b"null", b"[]", b'"x"', b"{}", b"\x00", b"\xff\xfe", b"{" * 2000, b"x=%00&x=1&csrf"):
            yield self.request(query, body, raw_body=raw)
        if isinstance(body, dict | list):
            cases = [(path, value) for path in _paths(body) for value in WRONG_VALUES]
            for path, value in rng.sample(cases, min(40, len(cases))):
                yield self.request(query, _replaced(body, path, value)) if self.shape.form else \
                    self.request(query, body, raw_body=json.dumps(_replaced(body, path, value)).encode())
            if not self.shape.form:
                text = json.dumps(body).encode()
                for number in RAW_NUMBERS:  # every value of the body in turn as a number JSON cannot hold
                    leaves = [m.span() for m in re.finditer(rb'(?<=: )("[^"]*"|[-0-9.e]+|true|false)', text)]
                    if leaves:
                        start, end = rng.choice(leaves)
                        yield self.request(query, body, raw_body=text[:start] + number + text[end:])
                deep = _nested(1100).encode()
                yield self.request(query, body, raw_body=text[:-1] + b', "x": ' + deep + b"}" if text.startswith(b"{")
                                   else deep)
        if self.shape.multipart:
            yield self.request(query, None, headers={"Content-Type": "multipart/form-data; boundary=zz"},
                               raw_body=b"--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\nx")
            head, data = _multipart(body, b"\xff\xfe\x00" * 100)
            yield self.request(query, None, headers=head, raw_body=data)
            head, data = _multipart(body, b"", filename="")
            yield self.request(query, None, headers=head, raw_body=data)

    def bad_credentials(self, query: list[tuple[str, str]], body: Any) -> list[Request]:
        if self.shape.caller.startswith("console"):
            cookies = [{"Cookie": f"{COOKIE}={value}"} for value in ("", "%00", "x" * 5000, "5f0e4c1d9a7b4e2f8c3d6a1b0e9f7c2d", "a;b")]
            own = self.creds.headers.get(self.shape.caller, {})
            found = [self.request(query, body, auth=c) for c in [{}, *cookies]]
            if self.method == "POST" and own:
                forged = {**body, "csrf": "forged"} if isinstance(body, dict) and "csrf" in body else body
                found.append(self.request(query, forged, auth=own))
                found.append(self.request(query, body, auth=own, headers={"Origin": "https://attacker.example"}))
                found.append(self.request(query, body, auth=own, headers={"Origin": "null"}))
            return found
        return [self.request(query, body, auth=forged) for forged in [{}, *self.creds.forged]]

    def other_site(self, query: list[tuple[str, str]], body: Any) -> Iterator[Request]:
        """Site B's ids wherever the route names one: path, query, body."""
        other = self.names(self.world.other)
        yield self.request(self.good_query(other), self.body(other) if body is not None else None, ids=self.world.other)
        for piece in (f"_id={self.world.other.patient}", f"patient=Patient/{self.world.other.patient}",
                      f"subject=Patient/{self.world.other.patient}", f"group={self.world.other.group}",
                      f"_has:Observation:subject:_id={self.world.other.patient}"):
            yield self.request("&".join([*(f"{k}={_quote(v)}" for k, v in query), piece]), body)
        if body is not None:
            yield self.request(query, self.body(other))


def _quote(value: object) -> str:
    """A query value as a client would send it, but the percent escapes of the corpus kept as they are."""
    text = str(value)
    return "".join(c if c.isalnum() or c in "%-._~:/|,$*!'()@=" else f"%{ord(c):02X}" for c in text) \
        if len(text) < 10_000 else text[:10_000]


def _multipart(fields: dict[str, str], content: bytes, filename: str = "site.csv") -> tuple[dict[str, str], bytes]:
    boundary = "fuzzboundary7f3a"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f"Content-Type: text/csv\r\n\r\n".encode() + content + b"\r\n")
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, b"".join(parts) + f"--{boundary}--\r\n".encode()


def sample(world: World, creds: Credentials, routes: set[tuple[str, str]], seed: int) -> list[tuple[tuple[str, str], Case]]:
    """For every route, ``PER_FAMILY`` cases of each family, drawn with ``seed``."""
    rng = random.Random(seed)
    drawn = []
    for key in sorted(routes):
        if key in EXEMPT:
            continue
        method, path = key
        generator = Generator(method, path, SHAPES[key], world, creds)
        for _family, cases in sorted(generator.cases(rng).items()):
            drawn += [(key, case) for case in rng.sample(cases, min(PER_FAMILY, len(cases)))]
    rng.shuffle(drawn)
    return drawn


# --- the checks -------------------------------------------------------------------------------------

#: Stands for a session (and its CSRF token) opened just for the one request that carries it.
THROWAWAY = "throwaway-session"
#: Callers allowed to see site B's data.
SEES_ALL = ("admin", "console-admin")


def problems_of(world: World, key: tuple[str, str], case: Case, answer: Answer) -> list[str]:
    request = case.request
    where = f"[{case.family}] {request}"
    found = []
    if answer.status >= 500:
        found.append(f"{answer.status} for {where}: {answer.body[:300]!r}")
    path = key[1]
    if 400 <= answer.status < 500 and path.startswith("/fhir") and request.method != "HEAD":
        try:
            outcome = json.loads(answer.body)
            ok = isinstance(outcome, dict) and outcome.get("resourceType") == "OperationOutcome"
        except ValueError:
            ok = b"OperationOutcome" in answer.body[:200]  # an XML one, when asked for
        if not ok:
            found.append(f"{answer.status} without an OperationOutcome for {where}: {answer.body[:200]!r}")
    if case.caller not in SEES_ALL:
        text = answer.body.decode("utf-8", "replace") + json.dumps(answer.headers)
        traces = (world.marker_b, world.other.patient, world.other.deleted) if "analyst" in case.caller \
            else (world.marker_b, world.site_b)  # analysts see sites' labels (by site figures), never a person
        leaked = [t for t in traces if t in text]
        if leaked:
            found.append(f"site B's {leaked} reached {case.caller}: {where}: {text[:300]}")
    return found


def send(world: World, case: Case) -> Answer:
    request = case.request
    if case.fresh_session:  # a request that may end the session it carries: a session of its own
        cookie, token = _login(world.root, world.people["console-site"])
        headers = {k: v.replace(THROWAWAY, cookie) for k, v in request.headers.items()}
        body = request.body.replace(THROWAWAY.encode(), token.encode()) if request.body else request.body
        request = replace(request, headers=headers, body=body)
    answer = send_raw(world.root, request)
    location = answer.headers.get("content-location", "")
    if answer.status == 202 and location.startswith("http"):  # let an accepted job finish before the next request
        with httpx.Client(headers={k: v for k, v in request.headers.items() if k == "Authorization"}, timeout=30) as http:
            _wait(http, location)
    return answer


def seed_of_run() -> int:
    given = os.environ.get("FHIRFUS_FUZZ_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


def test_every_route_is_fuzzed(secure_server: Any) -> None:
    served = route_table(secure_server.app)
    missing = sorted(served - set(SHAPES) - set(EXEMPT))
    assert missing == [], f"routes without a bad-input shape here (or a reasoned exemption in EXEMPT): {missing}"
    assert sorted((set(SHAPES) | set(EXEMPT)) - served) == [], "shapes of routes that no longer exist"
    assert all(len(reason) > 20 for reason in EXEMPT.values()), "an exemption says why"


def test_bad_input_on_every_route_never_hurts(world: World, secure_server: Any) -> None:
    seed = seed_of_run()
    creds = credentials(world)
    drawn = sample(world, creds, route_table(secure_server.app) & set(SHAPES), seed)
    problems: list[str] = []
    counts = secure_server.database.counts
    started = time.monotonic()
    for key, case in drawn:
        before = counts()
        try:
            answer = send(world, case)
        except (OSError, AssertionError) as exc:
            problems.append(f"no answer ({exc}) for [{case.family}] {case.request}")
            continue
        problems += problems_of(world, key, case, answer)
        if answer.status >= 400 and counts() != before:
            problems.append(f"refused ({answer.status}) but wrote: [{case.family}] {case.request}")
    problems += [f"site B's {ref} changed: {n} versions, was {world.b_versions[ref]}"
                 for ref, n in _b_versions(world).items() if n != world.b_versions[ref]]
    elapsed = time.monotonic() - started
    assert not problems, (f"seed {seed} (repeat with FHIRFUS_FUZZ_SEED={seed}): {len(problems)} problems in "
                          f"{len(drawn)} requests ({elapsed:.0f} s):\n" + "\n".join(problems[:60]))


def test_the_sample_is_the_same_for_one_seed(world: World, secure_server: Any) -> None:
    creds = credentials(world)
    routes = route_table(secure_server.app) & set(SHAPES)
    first = [(k, str(c.request)) for k, c in sample(world, creds, routes, 7)]
    assert first == [(k, str(c.request)) for k, c in sample(world, creds, routes, 7)]
    assert {k for k, _ in first} == routes  # every route is in every sample


def test_the_route_table_reaches_into_mounted_apps() -> None:
    """A sub-app mounted under a prefix (static files, another ASGI app) is a route too."""
    from fastapi import APIRouter, FastAPI
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    inner = Starlette(routes=[Route("/ping", lambda request: PlainTextResponse("x"))])
    router = APIRouter(prefix="/r")
    router.add_api_route("/x/{y}", lambda y: y, methods=["PUT"])
    app = FastAPI()
    app.include_router(router, prefix="/p")
    app.mount("/sub", inner)
    app.mount("/opaque", lambda scope, receive, send: None)  # type: ignore[arg-type,return-value]
    found = route_table(app)
    assert {("GET", "/sub/ping"), ("PUT", "/p/r/x/{y}"), ("*", "/opaque")} <= found

