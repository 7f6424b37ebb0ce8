"""Attack pass on site confinement: each test here demonstrated one finding and failed until it was fixed.

The timing finding (a confined search reads every site's matching index rows before the site
filter, so its time grows with another site's matches) is measured by ``bench/auth.py``
rather than asserted here: benchmarks are not timed tests.

Attacker: a site-A client (``system/*.cruds``), a narrow ``system/Observation.rs`` client of site A,
and an analyst; target: site B's data. Over HTTP with FHIRFUS_AUTH=smart, on SQLite and PostgreSQL
(``secure_server``). The intended rules are those of ``tests/auth/test_site_isolation.py`` and
``tests/auth/test_access_matrix.py``: what A may not see behaves exactly as if it did not exist (no
count, existence or cheap timing oracle), a narrow scope limits what a client learns, nothing
answers 5xx.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from auth_helpers import make_client
from conftest import run_server
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, insert

from fhirfus.db import migrate
from fhirfus.db.types import JsonDocument, UTCDateTime
from fhirfus.settings import Settings
from fhirfus.store.repository import Store
from tests.auth.test_site_isolation import SITE, World

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def world(secure_server) -> Iterator[World]:
    w = World(secure_server)
    try:
        yield w
    finally:
        w.close()


def fresh(http: httpx.Client) -> httpx.Client:
    """A new connection with the same token (a 5xx may leave the server closing the old one)."""
    return httpx.Client(base_url=str(http.base_url), headers={"Authorization": http.headers["Authorization"]},
                        timeout=60)


def cursor(values: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decoded_cursor(url: str) -> list:
    token = parse_qs(urlparse(url).query)["_cursor"][0]
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def link(bundle: dict, relation: str) -> str:
    return next(item["url"] for item in bundle["link"] if item["relation"] == relation)


# --- F2 (low/medium): paging cursors carry the global primary key ---------------------------------


def test_paging_cursors_do_not_count_other_sites_writes(world: World, secure_server) -> None:
    """A cursor held ``resources.pk``, a counter shared by every site, in base64 JSON: the gap
    between two of A's own resources told A how many resources (and audit events) anyone wrote in
    between. Cursors are sealed now: nothing in them reads as a position, two cursors for the same
    position differ, and an edited cursor is refused."""
    first, second = world.patient(world.a)["id"], world.patient(world.a)["id"]
    page = world.a.get("/Patient", params={"_id": f"{first},{second}", "_count": "1"}).json()
    again = world.a.get("/Patient", params={"_id": f"{first},{second}", "_count": "1"}).json()
    token = parse_qs(urlparse(link(page, "next")).query)["_cursor"][0]
    assert token != parse_qs(urlparse(link(again, "next")).query)["_cursor"][0]
    with pytest.raises(ValueError):
        json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert world.a.get(link(page, "next")).json()["entry"][0]["resource"]["id"] in (first, second)
    edited = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    answer = world.a.get("/Patient", params={"_id": f"{first},{second}", "_count": "1", "_cursor": edited})
    assert answer.status_code == 400, answer.text


# --- F3 (medium): chains and _has read types the client's scopes do not cover ---------------------


def _total(answer: httpx.Response) -> int | None:
    return answer.json().get("total") if answer.status_code == 200 else None


def test_a_narrow_scope_learns_nothing_of_types_it_may_not_read(world: World, secure_server) -> None:
    """A ``system/Observation.rs`` client may not read Patients or Provenances (403), and
    ``_include`` leaves them out; yet chains, ``_has`` and an export ``_typeFilter`` filter on their
    content, so hit and miss answer differently (a name or birth date is found by bisection).
    Expected: criteria over a type the scopes do not cover are refused (403) or change nothing."""
    store = Store(secure_server.database.engine)
    narrow = make_client(store, secure_server.root + "/auth/token", role="site", site=world.site_a,
                         scope="system/Observation.rs").http(world.base)
    patient = world.patient(world.a, birthDate="1961-02-03")
    observation = world.a.post("/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": f"Patient/{patient['id']}"}}).json()
    assert world.a.post("/Provenance", json={
        "resourceType": "Provenance", "recorded": "2020-01-01T00:00:00Z", "agent": [{"who": {"display": "x"}}],
        "target": [{"reference": f"Observation/{observation['id']}"}]}).status_code == 201
    with narrow:
        assert narrow.get(f"/Patient/{patient['id']}").status_code == 403
        assert narrow.get("/Provenance", params={"_id": "x"}).status_code == 403
        oracles = []
        for name, hit, miss in (
            ("subject:Patient.family", world.marker, "nobody-" + uuid.uuid4().hex),
            ("subject:Patient.birthdate", "1961-02-03", "1962-02-03"),
            ("_has:Provenance:target:recorded", "2020-01-01", "2021-01-01"),
        ):
            on_hit = narrow.get("/Observation", params={"_id": observation["id"], name: hit})
            on_miss = narrow.get("/Observation", params={"_id": observation["id"], name: miss})
            if on_hit.status_code != on_miss.status_code or _total(on_hit) != _total(on_miss):
                oracles.append((name, on_hit.status_code, _total(on_hit), on_miss.status_code, _total(on_miss)))
        kick = narrow.get("/$export", headers=ASYNC, params={
            "_type": "Observation", "_typeFilter": f"Observation?subject:Patient.family={world.marker}"})
        if kick.status_code != 403:
            oracles.append(("$export _typeFilter chain into Patient", kick.status_code))
            narrow.delete(kick.headers["Content-Location"])
    assert oracles == [], oracles


# --- F4 (low): forged paging cursors answer 5xx -------------------------------------------------


def test_forged_paging_cursors_answer_400_not_5xx(world: World) -> None:
    """Cursors are client input; ones that decode to values of the wrong kind or range must be a 400."""
    patient = world.patient(world.a)["id"]
    moment = "2020-01-01T00:00:00+00:00"
    requests = [
        (f"/Patient/{patient}/$everything", [True]),                     # bool passes isinstance(int)
        ("/Patient", ["n", [2 ** 63]]),                                  # beyond BIGINT / SQLite INTEGER
        ("/Observation?_sort=value-quantity", ["n", [{"d": "1e999999"}, 1]]),  # numeric overflow (PostgreSQL)
        ("/Patient/_history", [moment, 5, "x", 1]),                      # res_type not a string (PostgreSQL)
        ("/Patient/_history", [moment, "Patient", ["x"], 1]),            # res_id a list (SQLite)
        ("/Patient/_history", [moment, "Patient", {"a": 1}, 1]),         # res_id an object
        ("/Patient/_history", [moment, "Patient", "x", 10 ** 30]),       # version beyond INTEGER
    ]
    failures = []
    for path, values in requests:
        with fresh(world.a) as http:
            answer = http.get(path, params={"_cursor": cursor(values)})
        if answer.status_code >= 500:
            failures.append((path, values, answer.status_code))
    assert failures == [], failures


# --- F5 (medium, PostgreSQL): If-None-Exist is not safe under concurrency -------------------------


def test_concurrent_conditional_creates_create_one_resource(world: World) -> None:
    """Sixteen simultaneous ``POST Patient`` with the same ``If-None-Exist`` create exactly one."""
    value = uuid.uuid4().hex
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:attack:race", "value": value}]}
    barrier = threading.Barrier(8)

    def create(_: int) -> int:
        with fresh(world.a) as http:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=10)
            return http.post("/Patient", json=body, headers={"If-None-Exist": f"identifier=urn:attack:race|{value}"}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = Counter(pool.map(create, range(16)))
    found = world.a.get("/Patient", params={"identifier": f"urn:attack:race|{value}"}).json()["total"]
    assert found == 1 and statuses[201] == 1, (found, statuses)


# --- F6 (low, PostgreSQL): crossed transactions deadlock and answer 503 -----------------------------


def test_concurrent_transactions_over_the_same_ids_answer_no_5xx(world: World) -> None:
    """Two transactions updating X then Y and Y then X: PostgreSQL detects a deadlock, which the
    server answers as 503 "The database is unavailable" (ids are locked in entry order). Expected:
    no 5xx (lock in a fixed order, or answer 409 so the client retries)."""
    x, y = world.patient(world.a), world.patient(world.a)

    def transaction(i: int) -> int:
        first, second = (x, y) if i % 2 else (y, x)
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {**first, "active": i % 3 == 0}, "request": {"method": "PUT", "url": f"Patient/{first['id']}"}},
            {"resource": {**second, "active": i % 5 == 0}, "request": {"method": "PUT", "url": f"Patient/{second['id']}"}},
        ]}
        with fresh(world.a) as http:
            return http.post("", json=bundle).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = Counter(pool.map(transaction, range(40)))
    assert all(status < 500 for status in statuses), statuses


# --- F7 (low): an analyst reads Group content through $analysis-export errors --------------------


def test_analysis_kick_off_does_not_echo_group_content(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Analysts read no resources; the kick-off reads the Group as the server and its errors quote
    the Group's ``type`` and ``actual`` (422) and how many versions a deleted Group had (410)."""
    device = world.b.post("/Group", json={"resourceType": "Group", "type": "device", "actual": False}).json()
    deleted = world.b.post("/Group", json={"resourceType": "Group", "type": "person", "actual": True}).json()
    for name in ("one", "two"):
        assert world.b.put(f"/Group/{deleted['id']}", json={**deleted, "name": name}).status_code == 200
    assert world.b.delete(f"/Group/{deleted['id']}").status_code == 200
    not_a_cohort = world.analyst.get(f"/Group/{device['id']}/$analysis-export", headers=ASYNC)
    gone = world.analyst.get(f"/Group/{deleted['id']}/$analysis-export", headers=ASYNC)
    assert not_a_cohort.status_code == 422 and gone.status_code == 410
    assert "'device'" not in not_a_cohort.text and "False" not in not_a_cohort.text, not_a_cohort.text
    assert "version 4" not in gone.text, gone.text


# --- F8 (medium): migration 0011 gives an id's whole history to the site that took it over -------


_old = MetaData()
_old_resources = Table(
    "resources", _old, Column("pk", Integer, primary_key=True), Column("res_type", String(64)),
    Column("res_id", String(64)), Column("version", Integer), Column("last_updated", UTCDateTime),
    Column("deleted", Boolean), Column("content", JsonDocument))
_old_history = Table(
    "resource_history", _old, Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True), Column("version", Integer, primary_key=True),
    Column("last_updated", UTCDateTime), Column("method", String(8)), Column("content", JsonDocument))


def test_migration_keeps_an_id_with_the_site_that_first_wrote_it(fresh_database) -> None:
    """Before 0011 a deleted id could be taken over by another site (the bug 0011 fixes). The
    migration makes the *newest* labelled version's site the owner of every version, so a taker
    that wrote last now reads the original site's versions through vread and history. Expected:
    ownership follows the first write ("never moving between sites"); B gets none of A's versions."""
    suffix = uuid.uuid4().hex[:8]
    site_a, site_b, secret = f"MA{suffix}", f"MB{suffix}", f"secret-{suffix}"
    engine = fresh_database.engine
    migrate.upgrade(engine, "0010")
    res_id = str(uuid.uuid4())
    start = datetime.now(UTC) - timedelta(days=3)

    def version(number: int, site: str, family: str) -> dict:
        return {"resourceType": "Patient", "id": res_id, "name": [{"family": family}],
                "meta": {"versionId": str(number), "lastUpdated": (start + timedelta(days=number)).isoformat(),
                         "security": [{"system": SITE, "code": site}]}}

    with engine.begin() as conn:
        conn.execute(insert(_old_history), [
            {"res_type": "Patient", "res_id": res_id, "version": 1, "last_updated": start + timedelta(days=1),
             "method": "POST", "content": version(1, site_a, secret)},
            {"res_type": "Patient", "res_id": res_id, "version": 2, "last_updated": start + timedelta(days=2),
             "method": "DELETE", "content": None},
            {"res_type": "Patient", "res_id": res_id, "version": 3, "last_updated": start + timedelta(days=3),
             "method": "PUT", "content": version(3, site_b, "Intruder")},
        ])
        conn.execute(insert(_old_resources).values(
            res_type="Patient", res_id=res_id, version=3, last_updated=start + timedelta(days=3), deleted=False,
            content=version(3, site_b, "Intruder")))
    migrate.upgrade(engine)

    settings = Settings(database_url=fresh_database.url, auth="smart", token_secret="t-" + uuid.uuid4().hex,
                        rate_limit_per_minute=100_000)
    store = Store(engine)
    uv, thread, port = run_server(settings, store)
    try:
        root = f"http://127.0.0.1:{port}"
        b = make_client(store, root + "/auth/token", role="site", site=site_b, scope="system/*.cruds")
        with b.http(root + "/fhir") as http:
            first = http.get(f"/Patient/{res_id}/_history/1")
            history = http.get(f"/Patient/{res_id}/_history")
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
    assert first.status_code == 404 and secret not in first.text, first.text
    assert secret not in history.text, history.text
