"""The String(n) family: every width-limited column of the schema, and every request that can put a
caller-chosen value there.

PostgreSQL enforces ``VARCHAR(n)`` (SQLite does not), so a value longer than its column that reached
SQL would be a 500 on PostgreSQL only. The columns come from ``fhirfus.db.tables`` itself: a new
``String(n)`` column fails ``test_every_width_limited_column_is_reached_or_said_unreachable`` until it
is listed here, with the requests that reach it or the reason none can. For each way in, a value of
exactly n characters is taken (or refused for the reason stated beside it) and one of n+1 is a 4xx
naming the element, on SQLite and PostgreSQL alike, with nothing written to the column's table.

A way in is an HTTP request (FHIR API, ``$import``, token endpoint, the console's forms) or an
operator's command (``fhirfus clients add``, ``fhirfus pull``: the function it calls, whose typed error
the command prints); a value a source server sends to ``fhirfus pull`` is refused as a bad gateway.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from auth_helpers import make_client, new_key, public_jwk
from sqlalchemy import String, func, select

from fhirfus.auth import clients, people
from fhirfus.db.tables import metadata
from fhirfus.errors import FhirError
from fhirfus.pull import definitions
from fhirfus.pull.run import watermark
from fhirfus.store.repository import Store

PASSWORD = "correct horse battery staple"
#: ``Way.element`` for a refusal that names the value itself (an unknown resource type is its own name).
THE_VALUE = "<the value>"
ACCEPTED = "accepted"


def width_limited_columns() -> dict[str, int]:
    """``table.column`` → n of every ``String(n)`` column of the schema (``Text`` has no n)."""
    return {f"{table.name}.{column.name}": column.type.length
            for table in metadata.sorted_tables for column in table.columns
            if isinstance(column.type, String) and column.type.length is not None}


# --- what a way in answers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    named: tuple[str, ...]   # the elements the refusal names
    text: str


def _fhir(response: httpx.Response) -> Answer:
    try:
        body = response.json()
    except ValueError:
        body = {}
    named = tuple(e for issue in body.get("issue", ()) if isinstance(issue, dict) for e in issue.get("expression", ()))
    return Answer(response.status_code, named, response.text)


def _console(response: httpx.Response) -> Answer:
    """The console's form error: the page again (or the error page) saying which fields it concerns."""
    found = re.search(r"Concerns: ([^<]*)<", response.text)
    return Answer(response.status_code, tuple(found.group(1).split(", ")) if found else (), response.text)


def _oauth(response: httpx.Response) -> Answer:
    """An RFC 6749 error names the claim in its description (``jti is longer than …``)."""
    description = response.json().get("error_description", "") if response.status_code >= 400 else ""
    return Answer(response.status_code, tuple(re.findall(r"\b(jti|client)\b", description)), response.text)


def _called(run: Callable[[], object]) -> Answer:
    """What an operator's command gets from the function it calls: the typed error's status and elements."""
    try:
        run()
    except FhirError as exc:
        return Answer(exc.status, tuple(e for issue in exc.issues for e in issue.expression), exc.message)
    return Answer(200, (), "")


# --- the world the ways are sent to ----------------------------------------------------------------------


@dataclass
class World:
    fhir: httpx.Client          # authentication off: an unconfined caller, as an admin client is
    root: str                   # the server with authentication on (token endpoint, console)
    store: Store
    admin_console: httpx.Client
    csrf: str

    def fill(self, n: int, start: str = "w") -> str:
        """A value of exactly ``n`` characters no other request used (letters and digits)."""
        return (start + uuid.uuid4().hex + "x" * n)[:n]

    def type_name(self, n: int) -> str:
        """A resource-type-shaped name of ``n`` letters that is no resource type."""
        return ("Zz" + "q" * n)[:n]


def _world_console(root: str, store: Store) -> tuple[httpx.Client, str]:
    email = f"widths-{uuid.uuid4().hex[:8]}@example.org"
    _, token = people.add_person(store, email, "admin")
    people.set_password(store, token, PASSWORD)
    http = httpx.Client(base_url=root, timeout=60)
    assert http.post("/app/login", data={"email": email, "password": PASSWORD}).status_code == 303
    found = re.search(r'name="csrf" value="([^"]+)"', http.get("/app/admin/people").text)
    assert found
    return http, found.group(1)


@pytest.fixture(scope="module")
def world(server, secure_server) -> Iterator[World]:
    store = Store(server.database.engine)
    console, csrf = _world_console(secure_server.root, store)
    with server.client() as fhir:
        try:
            yield World(fhir, secure_server.root, store, console, csrf)
        finally:
            console.close()


# --- the ways in -------------------------------------------------------------------------------------


def put_id(world: World, n: int) -> Answer:
    value = world.fill(n)
    return _fhir(world.fhir.put(f"/Patient/{value}", json={"resourceType": "Patient", "id": value}))


def transaction_put_id(world: World, n: int) -> Answer:
    value = world.fill(n)
    return _fhir(world.fhir.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": value}, "request": {"method": "PUT", "url": f"Patient/{value}"}}]}))


def import_id(world: World, n: int) -> Answer:
    return _imported(world, {"resourceType": "Patient", "id": world.fill(n)})


def put_type(world: World, n: int) -> Answer:
    name = world.type_name(n)
    return _fhir(world.fhir.put(f"/{name}/1", json={"resourceType": name, "id": "1"}))


def site_label(world: World, n: int) -> Answer:
    label = {"system": "https://fhirfus.org/fhir/CodeSystem/site", "code": world.fill(n)}
    value = world.fill(40)
    return _fhir(world.fhir.put(f"/Patient/{value}", json={"resourceType": "Patient", "id": value,
                                                           "meta": {"security": [label]}}))


def _observation_of(world: World, reference: str) -> Answer:
    return _fhir(world.fhir.post("/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"text": "TWSTRS"}, "subject": {"reference": reference}}))


def reference_id(world: World, n: int) -> Answer:
    """A reference to a Patient of an n-character id (written first, so only the id's length can be wrong)."""
    value = world.fill(n)
    world.fhir.put(f"/Patient/{value}", json={"resourceType": "Patient", "id": value})
    return _observation_of(world, f"Patient/{value}")


def absolute_reference_id(world: World, n: int) -> Answer:
    """An absolute reference under this server's base is local: its id is judged like a relative one's."""
    value = world.fill(n)
    world.fhir.put(f"/Patient/{value}", json={"resourceType": "Patient", "id": value})
    return _observation_of(world, f"{world.fhir.base_url}Patient/{value}")


def binary_context(world: World, n: int) -> Answer:
    """A native Binary upload's ``X-Security-Context`` (a reference to a Patient written first)."""
    value = world.fill(n)
    world.fhir.put(f"/Patient/{value}", json={"resourceType": "Patient", "id": value})
    return _fhir(world.fhir.post("/Binary", content=b"scan", headers={
        "Content-Type": "application/octet-stream", "X-Security-Context": f"Patient/{value}"}))


def _transaction(world: World, resource: dict) -> Answer:
    return _fhir(world.fhir.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource,
         "request": {"method": "POST", "url": resource["resourceType"]}}]}))


def transaction_site_label(world: World, n: int) -> Answer:
    label = {"system": "https://fhirfus.org/fhir/CodeSystem/site", "code": world.fill(n)}
    return _transaction(world, {"resourceType": "Patient", "meta": {"security": [label]}})


def transaction_reference(world: World, n: int) -> Answer:
    value = world.fill(n)
    world.fhir.put(f"/Patient/{value}", json={"resourceType": "Patient", "id": value})
    return _transaction(world, {"resourceType": "Observation", "status": "final", "code": {"text": "TWSTRS"},
                                "subject": {"reference": f"Patient/{value}"}})


def _imported(world: World, resource: dict) -> Answer:
    """``POST /fhir/$import`` of one NDJSON line, run to its end: the line's OperationOutcome from the
    job's error file (a refused line is the 400 a write of it would be), or 200 when it was loaded."""
    kick_off = world.fhir.post("/$import", content=orjson.dumps(resource), params={"type": resource["resourceType"]},
                               headers={"Prefer": "respond-async", "Content-Type": "application/fhir+ndjson"})
    if kick_off.status_code != 202:
        return _fhir(kick_off)
    deadline = time.monotonic() + 60
    while (status := world.fhir.get(kick_off.headers["Content-Location"])).status_code == 202:
        assert time.monotonic() < deadline, "the import did not finish"
        time.sleep(0.1)
    manifest = status.json()
    if status.status_code != 200 or not manifest["error"]:
        return _fhir(status)
    outcome = orjson.loads(world.fhir.get(manifest["error"][0]["url"]).content.splitlines()[0])
    return Answer(400, tuple(e for issue in outcome["issue"] for e in issue.get("expression", ())),
                  orjson.dumps(outcome).decode())


def import_site_label(world: World, n: int) -> Answer:
    label = {"system": "https://fhirfus.org/fhir/CodeSystem/site", "code": world.fill(n)}
    return _imported(world, {"resourceType": "Patient", "id": world.fill(40), "meta": {"security": [label]}})


def import_reference(world: World, n: int) -> Answer:
    value = world.fill(n)
    world.fhir.put(f"/Patient/{value}", json={"resourceType": "Patient", "id": value})
    return _imported(world, {"resourceType": "Observation", "id": world.fill(40), "status": "final",
                             "code": {"text": "TWSTRS"}, "subject": {"reference": f"Patient/{value}"}})


def reference_type(world: World, n: int) -> Answer:
    return _observation_of(world, f"{world.type_name(n)}/1")


def subscription_id(world: World, n: int) -> Answer:
    value = world.fill(n)
    return _fhir(world.fhir.put(f"/Subscription/{value}", json={
        "resourceType": "Subscription", "id": value, "status": "requested", "reason": "widths",
        "criteria": f"Basic?identifier=never-{uuid.uuid4().hex}",
        "channel": {"type": "rest-hook", "endpoint": "https://receiver.example/hook"}}))


def group_export(world: World, n: int) -> Answer:
    return _fhir(world.fhir.get(f"/Group/{world.fill(n)}/$export", headers={"Prefer": "respond-async"}))


def patient_export(world: World, n: int) -> Answer:
    return _fhir(world.fhir.post("/Patient/$export", headers={"Prefer": "respond-async"}, json={
        "resourceType": "Parameters",
        "parameter": [{"name": "patient", "valueReference": {"reference": f"Patient/{world.fill(n)}"}}]}))


def export_type(world: World, n: int) -> Answer:
    return _fhir(world.fhir.get("/$export", params={"_type": world.type_name(n)}, headers={"Prefer": "respond-async"}))


def _person_form(world: World, **fields: str) -> Answer:
    return _console(world.admin_console.post("/app/admin/people", data={"csrf": world.csrf, **fields}))


def person_email(world: World, n: int) -> Answer:
    domain = "@site.example"
    return _person_form(world, email=world.fill(n - len(domain)) + domain, role="analyst")


def person_site(world: World, n: int) -> Answer:
    return _person_form(world, email=f"{uuid.uuid4().hex}@site.example", role="site", site=world.fill(n))


def person_role(world: World, n: int) -> Answer:
    return _person_form(world, email=f"{uuid.uuid4().hex}@site.example", role=world.fill(n))


def _register(world: World, name: str = "widths", role: str = "admin") -> Answer:
    """``fhirfus clients add`` (``clients.register``)."""
    jwks = {"keys": [public_jwk(new_key("ES384"), "k", "ES384")]}
    return _called(lambda: clients.register(world.store, name, role, "system/*.rs", jwks))


def client_name(world: World, n: int) -> Answer:
    return _register(world, name=world.fill(n))


def client_role(world: World, n: int) -> Answer:
    return _register(world, role=world.fill(n))


def assertion_jti(world: World, n: int) -> Answer:
    client = make_client(world.store, f"{world.root}/auth/token", role="admin", scope="system/*.rs", algorithm="ES384")
    return _oauth(client.token_request(client.assertion(jti=world.fill(n))))


def assertion_issuer(world: World, n: int) -> Answer:
    client = make_client(world.store, f"{world.root}/auth/token", role="admin", scope="system/*.rs", algorithm="ES384")
    issuer = world.fill(n)
    return _oauth(client.token_request(client.assertion(iss=issuer, sub=issuer)))


def _pull_definition(world: World, **fields: object) -> Answer:
    """``fhirfus pull --from … --client-id … --site … [--group …] [--name …]`` (``definitions.save``)."""
    given: dict = {"name": world.fill(20), "source_url": "https://site.example/fhir", "client_id": "hub",
                   "key_path": "/keys/hub.pem", "site": world.fill(8, "s")} | fields
    return _called(lambda: definitions.save(world.store, definitions.Definition(**given), datetime.now(UTC)))


def pull_name(world: World, n: int) -> Answer:
    return _pull_definition(world, name=world.fill(n))


def pull_client_id(world: World, n: int) -> Answer:
    return _pull_definition(world, client_id=world.fill(n))


def pull_site(world: World, n: int) -> Answer:
    return _pull_definition(world, site=world.fill(n, "s"))


def pull_group(world: World, n: int) -> Answer:
    return _pull_definition(world, group_id=world.fill(n))


def pull_watermark(world: World, n: int) -> Answer:
    """The source's manifest ``transactionTime``, the next pull's ``_since`` (a whole pull from a
    source answering it: tests/pull/test_pull_other_servers.py)."""
    instant = "2026-12-01T10:00:00." + "1" * (n - 21) + "Z"
    return _called(lambda: watermark({"transactionTime": instant}))


@dataclass(frozen=True)
class Way:
    how: str                                # the request, in words
    send: Callable[[World, int], Answer]    # sends a caller-chosen value of this many characters
    element: str                            # what the refusal of one character too many names
    at_width: str = ACCEPTED                # or why a value of exactly n characters is refused too
    refusal: range = range(400, 500)        # the status of one character too many


RESOURCE_ID = (Way("PUT /fhir/Patient/{id}", put_id, "Patient.id"),
               Way("POST /fhir a transaction with PUT Patient/{id}", transaction_put_id, "Bundle.entry[0].request.url"),
               Way("POST /fhir/$import of a Patient with that id", import_id, "Patient.id"))
RESOURCE_TYPE = Way("PUT /fhir/{type}/1", put_type, THE_VALUE, "Unknown resource type")
SITE_LABEL = (Way("PUT /fhir/Patient/{id} with a site label in meta.security", site_label, "Patient.meta.security"),
              Way("POST /fhir a transaction of a Patient with a site label", transaction_site_label,
                  "Bundle.entry[0].resource.meta.security"),
              Way("POST /fhir/$import of a Patient with a site label", import_site_label, "Patient.meta.security"))

#: Each column a request can put a caller-chosen value in → the requests that do.
REACHABLE: dict[str, tuple[Way, ...]] = {
    "resources.res_type": (RESOURCE_TYPE,),
    "resources.res_id": RESOURCE_ID,
    "resources.site": SITE_LABEL,
    "resource_history.res_type": (RESOURCE_TYPE,),
    "resource_history.res_id": RESOURCE_ID,
    "resource_history.site": SITE_LABEL,
    **{f"search_{kind}.res_type": (RESOURCE_TYPE,)
       for kind in ("token", "string", "date", "reference", "number", "quantity", "uri", "composite")},
    "search_reference.target_id": (
        Way("POST /fhir/Observation with subject Patient/{id}", reference_id, "Observation.subject.reference"),
        Way("POST /fhir a transaction of an Observation with subject Patient/{id}", transaction_reference,
            "Bundle.entry[0].resource.subject.reference"),
        Way("POST /fhir/Observation with subject {base}/Patient/{id}", absolute_reference_id, "Observation.subject"),
        Way("POST /fhir/Binary with X-Security-Context: Patient/{id}", binary_context, "X-Security-Context"),
        Way("POST /fhir/$import of an Observation with subject Patient/{id}", import_reference,
            "Observation.subject.reference")),
    "search_reference.target_type": (
        Way("POST /fhir/Observation with subject {type}/1", reference_type, "Observation.subject.reference",
            "names no resource type"),),
    "export_jobs.group_id": (Way("GET /fhir/Group/{id}/$export", group_export, "Group.id", "not found"),),
    "export_job_patients.patient_id": (
        Way("POST /fhir/Patient/$export with patient Patient/{id}", patient_export,
            "Parameters.parameter[0].valueReference.reference"),),
    "export_files.res_type": (Way("GET /fhir/$export?_type={type}", export_type, "_type", "Unknown resource type"),),
    "deid_crosswalk.patient_id": RESOURCE_ID,   # the exported Patients' ids
    "subscription_queue.subscription_id": (
        Way("PUT /fhir/Subscription/{id}", subscription_id, "Subscription.id"),),
    "subscription_queue.res_type": (RESOURCE_TYPE,),
    "subscription_queue.res_id": RESOURCE_ID,
    "auth_people.email": (Way("POST /app/admin/people email=…", person_email, "email"),),
    "auth_people.site": (Way("POST /app/admin/people site=…", person_site, "site"),),
    "auth_people.role": (Way("POST /app/admin/people role=…", person_role, "role", "role must be one of"),),
    "auth_clients.name": (Way("fhirfus clients add --name", client_name, "name"),),
    "auth_clients.role": (Way("fhirfus clients add --role", client_role, "role", "role must be one of"),),
    "auth_jti.jti": (Way("POST /auth/token, the assertion's jti", assertion_jti, "jti", "longer than 200"),),
    "auth_jti.client_id": (
        Way("POST /auth/token, the assertion's iss and sub", assertion_issuer, "client", "invalid_client"),),
    "pull_definitions.name": (Way("fhirfus pull --name", pull_name, "name"),),
    "pull_definitions.client_id": (Way("fhirfus pull --client-id", pull_client_id, "client-id"),),
    "pull_definitions.site": (Way("fhirfus pull --site", pull_site, "site", "1-32 letters"),),
    "pull_definitions.group_id": (Way("fhirfus pull --group", pull_group, "group"),),
    "pull_definitions.since": (
        Way("a source's manifest transactionTime (fhirfus pull)", pull_watermark, "manifest.transactionTime",
            refusal=range(502, 503)),),  # the source's answer, not the caller's: a bad gateway
}

SERVER_MADE = "made by the server (a uuid, a constant, a process's name or a count), never taken from a caller"
#: Columns no request can put a caller-chosen value in, and why.
UNREACHABLE: dict[str, str] = {
    "resource_history.method": "the interaction that wrote the version (POST, PUT, DELETE, PATCH)",
    **{f"search_{kind}.param": "a search parameter's code from the registry (the R4 definitions and the guide's "
                               "files); a search names parameters but writes no index row"
       for kind in ("token", "string", "date", "reference", "number", "quantity", "uri", "composite")},
    "load_journal.source": "the loaded file's SHA-256 (48 hex digits, ':' and the chunk size for NDJSON)",
    "export_jobs.id": SERVER_MADE, "export_jobs.status": SERVER_MADE, "export_jobs.owner": SERVER_MADE,
    "export_jobs.level": "the route that kicked the export off (system, patient, group, view)",
    "import_jobs.id": SERVER_MADE, "import_jobs.status": SERVER_MADE, "import_jobs.owner": SERVER_MADE,
    "import_jobs.client_id": "the authenticated client's id (a uuid made at registration: $import is for SMART "
                             "clients; console people never start one)",
    "import_jobs.role": "the authenticated caller's role (one of ROLES)",
    "import_jobs.site": "the authenticated caller's site (checked when the client was registered)",
    "export_files.job_id": SERVER_MADE, "export_job_patients.job_id": SERVER_MADE,
    "export_job_matches.job_id": SERVER_MADE, "import_errors.job_id": SERVER_MADE,
    "export_files.name": "made from a known resource type and a sequence number",
    "export_files.kind": "output, error or deleted",
    "pull_definitions.level": "system, patient or group, from the options given",
    "pull_definitions.status": SERVER_MADE,
    "deid_crosswalk.namespace": "an HMAC of FHIRFUS_DEID_KEY (40 hex digits)",
    "deid_crosswalk.pseudonym": "drawn at random by the policy",
    "auth_clients.client_id": "a uuid made at registration",
    "auth_clients.site": "checked by the one site-code rule (tests/auth/test_site_codes.py)",
    "auth_rate_counts.name": SERVER_MADE,
    "auth_rate_counts.key": "an authenticated client's id, or the connection's remote address",
    "auth_secrets.name": SERVER_MADE,
    "auth_people.person_id": "a uuid made when the person is added",
    "auth_people.setup_hash": "the SHA-256 of a token the server made",
    "auth_people.totp_secret": "made by the server when a second factor is set up",
    "auth_person_sessions.token_hash": "the SHA-256 of a token the server made",
    "auth_person_sessions.person_id": "the logged-in person's id (server-made)",
    "auth_person_sessions.csrf": SERVER_MADE,
    "subscription_queue.owner": SERVER_MADE,
}


def test_every_width_limited_column_is_reached_or_said_unreachable() -> None:
    columns = set(width_limited_columns())
    assert not set(REACHABLE) & set(UNREACHABLE)
    assert columns - set(REACHABLE) - set(UNREACHABLE) == set(), "a new String(n) column: how does a request reach it?"
    assert set(REACHABLE) | set(UNREACHABLE) <= columns, "listed columns the schema does not have"


def _rows(world: World, column: str) -> int:
    """Rows of the column's table (AuditEvents aside: requests are audited as they come)."""
    table = metadata.tables[column.split(".")[0]]
    query = select(func.count()).select_from(table)
    if "res_type" in table.c:
        query = query.where(table.c.res_type != "AuditEvent")
    with world.store.reading() as conn:
        return conn.execute(query).scalar_one()


CASES = [(column, way) for column, ways in REACHABLE.items() for way in ways]


@pytest.mark.parametrize(("column", "way"), CASES, ids=[f"{c}-{w.send.__name__}" for c, w in CASES])
def test_a_value_one_character_wider_than_its_column_is_refused_naming_the_element_and_writes_nothing(
    world: World, column: str, way: Way,
) -> None:
    width = width_limited_columns()[column]
    fits = way.send(world, width)
    if way.at_width == ACCEPTED:
        assert fits.status < 300, f"{way.how}: {width} characters → {fits.status} {fits.text[:300]}"
    else:
        assert 400 <= fits.status < 500 and way.at_width in fits.text, f"{way.how}: {fits.status} {fits.text[:300]}"
    before = _rows(world, column)
    wider = way.send(world, width + 1)
    assert wider.status in way.refusal, f"{way.how}: {width + 1} characters → {wider.status} {wider.text[:300]}"
    named = [e for e in wider.named if e == way.element or (way.element == THE_VALUE and len(e) == width + 1)]
    assert named, f"{way.how}: the refusal names {wider.named}, not {way.element}: {wider.text[:300]}"
    assert _rows(world, column) == before
