"""Reads by id on the event loop (``api/readpath.py``): the same answers as the route, never a stale
version, never another site's resource, and only for the requests the router would give the route."""

from __future__ import annotations

import asyncio
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from functools import partial

import httpx
import orjson
import psycopg
import pytest
from auth_helpers import make_client
from fast_paths import both_ways, meaning
from sqlalchemy import create_engine, func, select, text

from fhirfus.api import readpath
from fhirfus.api.app import create_app
from fhirfus.api.readpath import takes
from fhirfus.auth.access import DEVELOPMENT
from fhirfus.db import migrate
from fhirfus.db.async_pool import APPLICATION_NAME, AsyncReadPool, Statement
from fhirfus.db.engine import make_engine
from fhirfus.db.visibility import EVERYTHING, NOWHERE, Visibility, with_site_label
from fhirfus.errors import NotFound
from fhirfus.interactions import crud
from fhirfus.settings import Settings
from fhirfus.store import repository
from fhirfus.store.repository import Store, Stored

SITE = "https://fhirfus.org/fhir/CodeSystem/site"


def observation(unique: str, value: float = 1.0, **extra: object) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": f"readpath-{unique}"},
            "valueQuantity": {"value": value, "unit": "mg"}, **extra}


def test_each_read_after_an_update_answers_the_version_just_written(client: httpx.Client, unique: str) -> None:
    created = client.post("/Observation", json=observation(unique)).json()
    for version in range(2, 7):
        written = client.put(f"/Observation/{created['id']}", json={**created, "valueQuantity": {"value": version}})
        assert written.status_code == 200, written.text
        read = client.get(f"/Observation/{created['id']}")
        assert read.headers["ETag"] == f'W/"{version}"'
        assert read.json() == written.json()
        assert read.json()["meta"]["versionId"] == str(version)


def test_read_answers_stored_json_with_version_headers(client: httpx.Client, unique: str) -> None:
    created = client.post("/Observation", json=observation(unique)).json()
    response = client.get(f"/Observation/{created['id']}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json() == created
    stamped = datetime.fromisoformat(created["meta"]["lastUpdated"].replace("Z", "+00:00"))
    assert response.headers["Last-Modified"] == format_datetime(stamped.replace(microsecond=0), usegmt=True)


def test_read_renders_xml_and_pretty_json_from_the_stored_json(client: httpx.Client, unique: str) -> None:
    created = client.post("/Observation", json=observation(unique)).json()
    xml = client.get(f"/Observation/{created['id']}", params={"_format": "xml"})
    assert xml.headers["content-type"].startswith("application/fhir+xml")
    assert f'<id value="{created["id"]}"/>' in xml.text and f"readpath-{unique}" in xml.text
    pretty = client.get(f"/Observation/{created['id']}", params={"_pretty": "true"})
    assert pretty.text.startswith("{\n  ") and pretty.json() == created
    assert client.get(f"/Observation/{created['id']}", headers={"Accept": "text/html"}).status_code == 406
    assert client.get(f"/Observation/{created['id']}", params={"_format": "yaml"}).status_code == 406


def test_conditional_reads_answer_304_only_for_the_current_version(client: httpx.Client, unique: str) -> None:
    created = client.post("/Observation", json=observation(unique)).json()
    client.put(f"/Observation/{created['id']}", json={**created, "status": "amended"})
    path = f"/Observation/{created['id']}"
    assert client.get(path, headers={"If-None-Match": 'W/"2"'}).status_code == 304
    assert client.get(path, headers={"If-None-Match": 'W/"1"'}).status_code == 200
    modified = parsedate_to_datetime(client.get(path).headers["Last-Modified"])
    assert client.get(path, headers={"If-Modified-Since": format_datetime(modified, usegmt=True)}).status_code == 304
    earlier = format_datetime(modified - timedelta(seconds=2), usegmt=True)
    assert client.get(path, headers={"If-Modified-Since": earlier}).status_code == 200
    assert client.get(path, headers={"If-None-Match": "garbage"}).status_code == 400


def test_deleted_unknown_and_misspelt_reads_answer_as_the_route(client: httpx.Client, unique: str) -> None:
    created = client.post("/Observation", json=observation(unique)).json()
    client.delete(f"/Observation/{created['id']}")
    gone = client.get(f"/Observation/{created['id']}")
    assert gone.status_code == 410 and gone.json()["resourceType"] == "OperationOutcome"
    missing = client.get(f"/Observation/never-{unique}")
    assert missing.status_code == 404 and missing.json()["issue"][0]["code"] == "not-found"
    assert client.get(f"/Observatio/{unique}").status_code == 404
    bad = client.get("/Observation/" + "x" * 65)
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["Observation.id"]


def test_every_kind_of_read_answers_as_the_route(client: httpx.Client, unique: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """On both backends (PostgreSQL's async read, SQLite's route function on a worker thread):
    plain, XML, pretty, projected, conditional, HEAD, vread, gone and never-written reads."""
    created = client.post("/Observation", json=observation(unique)).json()
    path = f"/Observation/{created['id']}"
    removed = client.post("/Observation", json=observation(unique)).json()
    client.delete(f"/Observation/{removed['id']}")
    reads: list[tuple[str, str, dict[str, str], dict[str, str]]] = [
        ("GET", path, {}, {}), ("GET", path, {"_format": "xml"}, {}), ("GET", path, {"_pretty": "true"}, {}),
        ("GET", path, {"_summary": "true"}, {}), ("GET", path, {"_elements": "status"}, {}),
        ("GET", path, {}, {"Accept": "application/fhir+xml"}), ("GET", path, {}, {"If-None-Match": 'W/"1"'}),
        ("GET", path, {}, {"If-None-Match": 'W/"2"'}), ("HEAD", path, {}, {}),
        ("GET", f"{path}/_history/1", {}, {}), ("GET", f"{path}/_history/2", {}, {}),
        ("GET", f"/Observation/{removed['id']}", {}, {}), ("GET", f"/Observation/never-{unique}", {}, {}),
    ]
    for method, url, params, headers in reads:
        fast, routed = both_ways(monkeypatch, readpath, partial(client.request, method, url, params=params,
                                                                headers=headers))
        assert meaning(fast) == meaning(routed), (method, url, params, headers)


def test_a_site_reads_its_own_resources_and_never_another_sites(secure_server, unique: str) -> None:
    store = Store(secure_server.database.engine)
    token_url = secure_server.root + "/auth/token"
    site_a, site_b = f"A{unique}", f"B{unique}"
    a = make_client(store, token_url, role="site", site=site_a, scope="system/*.cruds").http(secure_server.base)
    b = make_client(store, token_url, role="site", site=site_b, scope="system/*.cruds").http(secure_server.base)
    with a, b:
        created = b.post("/Observation", json=observation(unique)).json()
        assert created["meta"]["security"][0] == {"system": SITE, "code": site_b}
        assert b.get(f"/Observation/{created['id']}").json() == created
        hidden = a.get(f"/Observation/{created['id']}")
        never = a.get(f"/Observation/never-{unique}")
        assert (hidden.status_code, never.status_code) == (404, 404)
        assert hidden.json()["issue"][0]["code"] == never.json()["issue"][0]["code"] == "not-found"
        assert f"readpath-{unique}" not in hidden.text
        assert a.head(f"/Observation/{created['id']}").status_code == 404
        assert httpx.get(f"{secure_server.base}/Observation/{created['id']}").status_code == 401


def test_the_fast_path_takes_exactly_what_the_router_gives_the_read_route(database) -> None:
    """Every other GET route of two segments under /fhir has a segment no served type or valid id
    can be, so answering ``takes`` ahead of routing never steals another route's request."""
    app = create_app(Settings(database_url=database.url, auth="off"), Store(database.engine))
    others = [route.path for included in app.routes
              for route in getattr(getattr(included, "original_router", None), "routes", ())
              if route.path.startswith("/fhir/")
              and {"GET", "HEAD"} & set(getattr(route, "methods", ()) or ())
              and route.endpoint.__name__ not in ("read", "vread")]
    assert "/fhir/ValueSet/$expand" in others and "/fhir/{res_type}/{res_id}/_history" in others
    for template in others:
        for filler in ("Observation", "abc-1", "1"):
            path = re.sub(r"\{[^}]+\}", filler, template)
            assert takes("GET", path) is None, path
    assert takes("GET", "/fhir/Observation/abc-1") == ("Observation", "abc-1", None)
    assert takes("HEAD", "/fhir/Patient/p.1") == ("Patient", "p.1", None)
    assert takes("GET", "/fhir/Observation/abc-1/_history/12") == ("Observation", "abc-1", "12")
    assert takes("HEAD", "/fhir/Observation/abc-1/_history/12") is None  # vread is GET only: the router's 405
    assert takes("PUT", "/fhir/Observation/abc-1") is None
    assert takes("GET", "/fhir/Binary/abc-1") is None  # its content and securityContext: the route's
    assert takes("GET", "/fhir/Observation/abc-1/_history/x") is None  # the route's 400


def test_on_postgresql_the_read_runs_on_an_async_connection_with_the_stored_bytes(database, unique: str) -> None:
    if database.backend != "postgresql":
        assert AsyncReadPool.for_engine(database.engine) is None  # SQLite reads stay on the route's thread
        return
    pool = AsyncReadPool.for_engine(database.engine)
    assert pool is not None
    store = Store(database.engine, pool)
    created = crud.create(store, DEVELOPMENT, "Observation", observation(unique), None, "").stored

    async def read_and_vread() -> list:
        try:
            found = [await crud.read_raw(store, DEVELOPMENT, "Observation", created.res_id),
                     await crud.vread_raw(store, DEVELOPMENT, "Observation", created.res_id, "1")]
            with pytest.raises(NotFound):
                await crud.read_raw(store, DEVELOPMENT, "Observation", f"never-{unique}")
            return found
        finally:
            await pool.close()

    first, second = asyncio.run(read_and_vread())
    assert first.raw is not None and orjson.loads(first.raw) == created.content
    assert (first.version, first.last_updated, first.site) == (1, created.last_updated, None)
    assert (second.raw, second.version, second.last_updated, second.method) == (first.raw, 1, first.last_updated, "POST")


def test_reads_are_in_the_request_log_under_the_route_template(client: httpx.Client, unique: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import time

    caplog.set_level(logging.INFO, logger="fhirfus.requests")
    created = client.post("/Observation", json=observation(unique)).json()
    client.get(f"/Observation/{created['id']}")
    deadline = time.monotonic() + 5
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = [r.getMessage() for r in caplog.records if r.name == "fhirfus.requests"]
        if any(line.startswith("GET ") for line in lines):
            break
        time.sleep(0.05)
    assert any(line.startswith("GET /fhir/{res_type}/{res_id} 200 ") for line in lines), lines
    assert not any(created["id"] in line for line in lines)


def test_an_id_breaking_the_r4_rule_is_refused_by_the_route(client: httpx.Client) -> None:
    assert client.get(f"/Observation/{uuid.uuid4()}%00").status_code == 400


def test_reads_go_on_after_postgresql_closed_the_pooled_connections(client: httpx.Client, server, unique: str) -> None:
    created = client.post("/Observation", json=observation(unique)).json()
    with ThreadPoolExecutor(4) as readers:  # several connections in the pool, all of them closed below
        assert set(readers.map(lambda _: client.get(f"/Observation/{created['id']}").status_code, range(16))) == {200}
    if server.database.backend == "postgresql":
        with server.database.engine.connect() as conn:
            closed = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database()"), {"name": APPLICATION_NAME}).scalar_one()
        assert closed >= 1  # the read above left its connection in the pool
    for _ in range(3):
        response = client.get(f"/Observation/{created['id']}")
        assert response.status_code == 200, response.text
        assert response.json() == created


def test_summary_and_elements_project_a_read_and_tag_it_subsetted(client: httpx.Client, unique: str) -> None:
    created = client.post("/Observation", json=observation(unique, note=[{"text": "not in the summary"}])).json()
    path = f"/Observation/{created['id']}"
    summary = client.get(path, params={"_summary": "true"}).json()
    assert summary["status"] == "final" and "note" not in summary
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"} in summary["meta"]["tag"]
    elements = client.get(path, params={"_elements": "valueQuantity", "_format": "xml"})
    assert "<valueQuantity>" in elements.text and "<note>" not in elements.text and "SUBSETTED" in elements.text
    data = client.get(path, params={"_summary": "data"}).json()
    assert data["note"] == [{"text": "not in the summary"}]
    assert client.get(path, params={"_summary": "false"}).json() == created
    refused = client.get(path, params={"_summary": "count"})
    assert refused.status_code == 400 and refused.json()["issue"][0]["expression"] == ["_summary"]


def test_vread_answers_each_version_as_it_was_written(client: httpx.Client, unique: str) -> None:
    created = client.post("/Observation", json=observation(unique)).json()
    second = client.put(f"/Observation/{created['id']}", json={**created, "status": "amended"}).json()
    client.delete(f"/Observation/{created['id']}")
    first = client.get(f"/Observation/{created['id']}/_history/1")
    assert first.status_code == 200 and first.json() == created and first.headers["ETag"] == 'W/"1"'
    assert client.get(f"/Observation/{created['id']}/_history/2", params={"_format": "xml"}).text.count(
        '<status value="amended"/>') == 1
    assert client.get(f"/Observation/{created['id']}/_history/2").json() == second
    assert client.get(f"/Observation/{created['id']}/_history/3").status_code == 410
    missing = client.get(f"/Observation/{created['id']}/_history/4")
    assert missing.status_code == 404 and missing.json()["issue"][0]["expression"] == ["meta.versionId"]
    assert client.get(f"/Observation/never-{unique}/_history/1").status_code == 404
    assert client.get(f"/Observation/{created['id']}/_history/0").status_code == 400
    assert client.head(f"/Observation/{created['id']}/_history/1").status_code == 405


def test_a_site_never_vreads_another_sites_versions(secure_server, unique: str) -> None:
    store = Store(secure_server.database.engine)
    token_url = secure_server.root + "/auth/token"
    a = make_client(store, token_url, role="site", site=f"A{unique}", scope="system/*.cruds").http(secure_server.base)
    b = make_client(store, token_url, role="site", site=f"B{unique}", scope="system/*.cruds").http(secure_server.base)
    with a, b:
        created = b.post("/Observation", json=observation(unique)).json()
        assert b.get(f"/Observation/{created['id']}/_history/1").json() == created
        hidden = a.get(f"/Observation/{created['id']}/_history/1")
        assert hidden.status_code == 404 and f"readpath-{unique}" not in hidden.text


def _postgres_pool(database, **kwargs: int) -> AsyncReadPool:
    if database.backend != "postgresql":
        pytest.skip("the async read pool is PostgreSQL's")
    pool = AsyncReadPool.for_engine(database.engine, **kwargs)
    assert pool is not None
    return pool


def test_a_read_cancelled_mid_statement_leaves_no_connection_mid_answer_in_the_pool(database, unique: str) -> None:
    pool = _postgres_pool(database, size=1)  # one connection: the read after the cancel must not get a half-read one
    store = Store(database.engine, pool)
    created = crud.create(store, DEVELOPMENT, "Observation", observation(unique), None, "").stored
    slow = Statement.of(select(func.pg_sleep(2)))

    async def cancel_then_read() -> tuple[bool, bytes | None]:
        try:
            waiting = asyncio.create_task(pool.fetch_one(slow, {}))
            await asyncio.sleep(0.2)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            read = await crud.read_raw(store, DEVELOPMENT, "Observation", created.res_id)
            return read.raw is not None, read.raw
        finally:
            await pool.close()

    found, raw = asyncio.run(asyncio.wait_for(cancel_then_read(), 1.5))  # not after the 2 s sleep's answer
    assert found and orjson.loads(raw or b"") == created.content


def test_a_read_beyond_the_statement_limit_is_refused_and_the_connection_serves_the_next(database, unique: str) -> None:
    pool = _postgres_pool(database, statement_timeout_ms=100, size=1)
    store = Store(database.engine, pool)
    created = crud.create(store, DEVELOPMENT, "Observation", observation(unique), None, "").stored

    async def timeout_then_read() -> tuple[int, int]:
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                await pool.fetch_one(Statement.of(select(func.pg_sleep(1))), {})
            first = (await pool.fetch_one(Statement.of(select(func.pg_backend_pid())), {}) or (0,))[0]
            read = await crud.read_raw(store, DEVELOPMENT, "Observation", created.res_id)
            assert read.version == 1 and read.last_updated == created.last_updated
            return first, (await pool.fetch_one(Statement.of(select(func.pg_backend_pid())), {}) or (0,))[0]
        finally:
            await pool.close()

    before, after = asyncio.run(timeout_then_read())
    assert before == after != 0  # the refused statement left its connection idle and in the pool


def test_site_parameters_reach_the_prepared_statement_as_the_site_names(database, unique: str) -> None:
    pool = _postgres_pool(database)
    site = f"S{unique}"
    with Store(database.engine).writing() as conn:
        stored = repository.create(conn, "Observation", f"site-{unique}", with_site_label(observation(unique), site))

    async def reads() -> list[Stored | None]:
        try:
            return [await repository.current_raw(pool, seen_by, "Observation", stored.res_id)
                    for seen_by in (Visibility(site), Visibility(f"T{unique}"), NOWHERE, EVERYTHING)]
        finally:
            await pool.close()

    own, other, nowhere, everything = asyncio.run(reads())
    assert own is not None and (own.site, own.version, own.deleted) == (site, 1, False)
    assert other is None and nowhere is None
    assert everything is not None and everything.raw == own.raw


def test_the_stored_json_comes_as_utf8_from_a_database_of_another_encoding(database, unique: str) -> None:
    if database.backend != "postgresql":
        pytest.skip("the async read pool is PostgreSQL's")
    admin = create_engine(database.engine.url, isolation_level="AUTOCOMMIT")
    name = f"fhirfus_test_latin1_{unique}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE \"{name}\" ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"))
        engine = make_engine(database.engine.url.set(database=name).render_as_string(hide_password=False))
        try:
            migrate.upgrade(engine)
            pool = AsyncReadPool.for_engine(engine)
            assert pool is not None
            store = Store(engine, pool)
            created = crud.create(store, DEVELOPMENT, "Observation", observation(unique, note=[{"text": "Müller, Zürich"}]),
                                  None, "").stored

            async def read() -> bytes | None:
                try:
                    return (await crud.read_raw(store, DEVELOPMENT, "Observation", created.res_id)).raw
                finally:
                    await pool.close()

            raw = asyncio.run(read())
            assert raw is not None and "Müller, Zürich".encode() in raw
            assert orjson.loads(raw) == created.content
        finally:
            engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
