"""Bulk Data ``$export`` over HTTP on both databases: the flow the Inferno v2 test kit checks,
every level and parameter, the exact set of resources (against a search of the same data),
cancellation, restarts, capacity, expiry, snapshot semantics and ``fhirfus export bulk``."""

from __future__ import annotations

import gzip
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, insert
from typer.testing import CliRunner

from fhirfus import cli
from fhirfus.bulk import jobs as bulk_jobs
from fhirfus.bulk import jobworker
from fhirfus.bulk.params import ExportRequest
from fhirfus.bulk.run import ExportLimits, run_export
from fhirfus.bulk.worker import ExportWorker
from fhirfus.db.tables import export_jobs
from fhirfus.settings import Settings, get_settings
from fhirfus.store.repository import Store
from tests.conftest import Database, run_server

KICK_OFF = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
CODES = "https://fhirfus.example.org/CodeSystem/bulk-test"
TIMEOUT_S = 15


# --- helpers ---------------------------------------------------------------------------------


def base_of(http: httpx.Client) -> str:
    return str(http.base_url).rstrip("/")


def kick_off(http: httpx.Client, path: str, **kwargs: Any) -> str:
    headers = {**KICK_OFF, **kwargs.pop("headers", {})}
    method = kwargs.pop("method", "GET")
    response = http.request(method, path, headers=headers, **kwargs)
    assert response.status_code == 202, response.text
    location = response.headers["content-location"]
    assert location.startswith("http://"), location
    return location


def wait(http: httpx.Client, location: str) -> httpx.Response:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        response = http.get(location, headers={"Accept": "application/json"})
        if response.status_code != 202:
            return response
        assert response.headers["x-progress"] and int(response.headers["retry-after"]) >= 1
        time.sleep(0.05)
    raise AssertionError(f"export {location} did not finish in {TIMEOUT_S} s")


def manifest_of(http: httpx.Client, location: str) -> dict:
    response = wait(http, location)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["expires"].endswith("GMT")
    body = response.json()
    assert set(body) >= {"transactionTime", "request", "requiresAccessToken", "output", "error"}
    return body


def download(http: httpx.Client, items: list[dict]) -> dict[str, list[dict]]:
    """Every file of a manifest section, checked line by line; resources by type."""
    found: dict[str, list[dict]] = {}
    for item in items:
        response = http.get(item["url"], headers={"Accept": "application/fhir+ndjson"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        lines = response.content.splitlines()
        assert len(lines) == item["count"]
        for line in lines:
            resource = orjson.loads(line)
            assert resource["resourceType"] == item["type"]
            found.setdefault(item["type"], []).append(resource)
    return found


def exported_ids(http: httpx.Client, location: str) -> set[str]:
    manifest = manifest_of(http, location)
    resources = download(http, manifest["output"])
    ids = [f"{r['resourceType']}/{r['id']}" for items in resources.values() for r in items]
    assert len(ids) == len(set(ids)), "a resource was exported twice"
    return set(ids)


def search_ids(http: httpx.Client, url: str) -> set[str]:
    found: set[str] = set()
    next_url: str | None = url
    while next_url:
        bundle = http.get(next_url).json()
        found |= {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])}
        next_url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return found


def finish(http: httpx.Client, location: str) -> None:
    """DELETE a job (its files go); the status URL is 404 afterwards."""
    assert http.delete(location).status_code == 202
    gone = http.get(location)
    assert gone.status_code == 404 and gone.json()["resourceType"] == "OperationOutcome"


@dataclass
class Cohort:
    patients: list[str]
    in_compartment: dict[str, set[str]]   # patient id → ids in its compartment (marker resources)
    orphan: str                           # a marker Observation without a patient


def make_cohort(http: httpx.Client, unique: str, size: int = 3) -> Cohort:
    patients, compartments = [], {}
    for n in range(size):
        patient = http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": unique}]}).json()
        ref = {"reference": f"Patient/{patient['id']}"}
        ids = {f"Patient/{patient['id']}"}
        for k in range(2):
            obs = http.post("/Observation", json={
                "resourceType": "Observation", "status": "final", "subject": ref,
                "code": {"coding": [{"system": CODES, "code": unique}], "text": f"{n}.{k}"},
            }).json()
            ids.add(f"Observation/{obs['id']}")
        condition = http.post("/Condition", json={
            "resourceType": "Condition", "subject": ref, "code": {"coding": [{"system": CODES, "code": unique}]},
        }).json()
        ids.add(f"Condition/{condition['id']}")
        patients.append(patient["id"])
        compartments[patient["id"]] = ids
    orphan = http.post("/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"coding": [{"system": CODES, "code": unique}]},
    }).json()
    return Cohort(patients, compartments, f"Observation/{orphan['id']}")


def marker_filters(unique: str) -> str:
    """``_typeFilter``s that keep only one test's resources."""
    return "&".join(
        f"_typeFilter={quote(query, safe='')}"
        for query in (f"Patient?family={unique}", f"Observation?code={CODES}|{unique}",
                      f"Condition?code={CODES}|{unique}")
    )


@dataclass
class Exporter:
    base: str
    app: FastAPI
    export_dir: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30)

    @property
    def worker(self) -> ExportWorker:
        return self.app.state.bulk_exports


@pytest.fixture
def exporter(database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Exporter]]:
    """Start extra servers on the test database with their own export settings."""
    started = []

    def start(**overrides: Any) -> Exporter:
        export_dir = tmp_path_factory.mktemp("exports")
        settings = Settings(database_url=database.url, auth="off", export_dir=str(export_dir), **overrides)
        uv, thread, port = run_server(settings, Store(database.engine))
        started.append((uv, thread))
        return Exporter(f"http://127.0.0.1:{port}/fhir", uv.config.app, export_dir)

    yield start
    for uv, thread in started:
        uv.should_exit = True
        thread.join(timeout=10)


def insert_job(database: Database, request: ExportRequest, **fields: Any) -> str:
    job_id = uuid.uuid4().hex
    moment = datetime.now(UTC)
    values = {
        "id": job_id, "level": request.level, "group_id": request.group_id, "status": "running",
        "request_url": "http://example.org/fhir/$export", "params": request.to_json(), "progress": 0, "percent": 0,
        "attempts": 1, "owner": "dead-host:1:dead", "heartbeat": moment, "created": moment, "updated": moment,
    }
    with database.engine.begin() as conn:
        conn.execute(insert(export_jobs).values({**values, **fields}))
    return job_id


def delete_job(database: Database, job_id: str) -> None:
    with database.engine.begin() as conn:
        conn.execute(delete(export_jobs).where(export_jobs.c.id == job_id))


# --- discovery and the kick-off / status / download flow --------------------------------------


def test_capability_statement_declares_the_export_operations(client: httpx.Client) -> None:
    statement = client.get("/metadata").json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in statement["instantiates"]
    rest = statement["rest"][0]
    assert {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"} in rest["operation"]
    by_type = {r["type"]: r for r in rest["resource"]}
    for res_type, definition in (("Patient", "patient-export"), ("Group", "group-export")):
        names = {op["definition"] for op in by_type[res_type]["operation"]}
        assert f"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/{definition}" in names


def test_system_export_is_exactly_what_a_search_finds(client: httpx.Client, unique: str) -> None:
    make_cohort(client, unique, size=2)
    path = "/$export?_type=Patient,Condition"
    location = kick_off(client, path)
    manifest = manifest_of(client, location)
    assert unquote(manifest["request"]) == f"{base_of(client)}{path}"
    assert manifest["requiresAccessToken"] is False  # authentication is off; nothing to present
    assert manifest["error"] == []
    assert all(item["url"].startswith(f"{base_of(client)}/_export/") for item in manifest["output"])
    assert {item["type"] for item in manifest["output"]} == {"Patient", "Condition"}
    resources = download(client, manifest["output"])
    exported = {f"{r['resourceType']}/{r['id']}" for items in resources.values() for r in items}
    assert exported == search_ids(client, "/Patient?_count=1000") | search_ids(client, "/Condition?_count=1000")
    finish(client, location)
    assert client.get(manifest["output"][0]["url"]).status_code == 404


def test_status_of_a_running_job_reports_progress(database: Database, client: httpx.Client) -> None:
    job_id = insert_job(database, ExportRequest(), owner="busy-host:1:alive", percent=42, progress=4200)
    try:
        response = client.get(f"/_export/{job_id}")
        assert response.status_code == 202
        assert response.headers["x-progress"] == "42% done, 4200 resources written"
        assert int(response.headers["retry-after"]) >= 1
        assert len(response.headers["x-progress"]) < 100
    finally:
        delete_job(database, job_id)


def test_files_are_served_gzip_compressed_when_accepted(client: httpx.Client) -> None:
    location = kick_off(client, "/$export?_type=Patient")
    url = manifest_of(client, location)["output"][0]["url"]
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as raw:
        assert raw.headers["content-encoding"] == "gzip"
        assert raw.headers["content-type"].startswith("application/fhir+ndjson")
        assert gzip.decompress(b"".join(raw.iter_raw())) == plain.content
    finish(client, location)


def test_files_are_split_per_type_and_size(exporter: Callable[..., Exporter], client: httpx.Client,
                                           unique: str) -> None:
    cohort = make_cohort(client, unique, size=5)
    server = exporter(export_file_max_resources=2)
    with server.client() as http:
        location = kick_off(http, f"/$export?_type=Patient&{marker_filters(unique)}")
        manifest = manifest_of(http, location)
        assert [(i["type"], i["count"], i["url"].rsplit("/", 1)[1]) for i in manifest["output"]] == [
            ("Patient", 2, "Patient.1.ndjson"), ("Patient", 2, "Patient.2.ndjson"), ("Patient", 1, "Patient.3.ndjson"),
        ]
        patients = download(http, manifest["output"])["Patient"]
        assert {p["id"] for p in patients} == set(cohort.patients)
        finish(http, location)
    assert not any(server.export_dir.iterdir()), "cancelled job left files behind"


# --- levels ------------------------------------------------------------------------------------


def test_patient_level_exports_the_patient_compartments(client: httpx.Client, unique: str) -> None:
    cohort = make_cohort(client, unique)
    types = "Patient,Observation,Condition"  # other tests' AuditEvents can be in any compartment
    location = kick_off(client, f"/Patient/$export?_type={types}&{marker_filters(unique)}")
    exported = exported_ids(client, location)
    expected = set().union(*cohort.in_compartment.values())
    assert exported == expected
    assert cohort.orphan not in exported
    everything = set().union(*(search_ids(client, f"/Patient/{p}/$everything?_type={types}")
                               for p in cohort.patients))
    assert exported == everything
    finish(client, location)


def test_group_level_exports_active_members_only(client: httpx.Client, unique: str) -> None:
    cohort = make_cohort(client, unique, size=3)
    first, second, left = cohort.patients
    group = client.post("/Group", json={
        "resourceType": "Group", "type": "person", "actual": True,
        "member": [{"entity": {"reference": f"Patient/{first}"}},
                   {"entity": {"reference": f"{base_of(client)}/Patient/{second}"}},
                   {"entity": {"reference": f"Patient/{left}"}, "inactive": True}],
    }).json()
    location = kick_off(client, f"/Group/{group['id']}/$export")
    manifest = manifest_of(client, location)
    resources = download(client, manifest["output"])
    assert {p["id"] for p in resources["Patient"]} == {first, second}  # Inferno: Patient ids match the group
    exported = {f"{r['resourceType']}/{r['id']}" for items in resources.values() for r in items}
    expected = search_ids(client, f"/Patient/{first}/$everything") | search_ids(client, f"/Patient/{second}/$everything")
    assert exported == expected
    assert f"Group/{group['id']}" in exported  # a Group is in its members' compartments
    assert not cohort.in_compartment[left] & exported
    finish(client, location)


def test_compartment_leaves_out_references_to_another_servers_patient(client: httpx.Client, unique: str) -> None:
    cohort = make_cohort(client, unique, size=1)
    (patient,) = cohort.patients
    foreign = client.post("/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"text": unique},
        "subject": {"reference": f"https://ehr.example.org/fhir/Patient/{patient}"}}).json()["id"]
    location = kick_off(client, "/Patient/$export", method="POST", data={"patient": f"Patient/{patient}"})
    exported = exported_ids(client, location)
    assert f"Observation/{foreign}" not in exported
    assert exported == cohort.in_compartment[patient]
    finish(client, location)


def test_patient_parameter_as_form_and_as_parameters(client: httpx.Client, unique: str) -> None:
    cohort = make_cohort(client, unique, size=3)
    first, second, _ = cohort.patients
    form = kick_off(client, "/Patient/$export", method="POST", data={"patient": f"Patient/{first}"})
    assert exported_ids(client, form) == cohort.in_compartment[first]
    finish(client, form)
    parameters = {"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient,Observation"},
        {"name": "patient", "valueReference": {"reference": f"Patient/{second}"}},
        {"name": "patient", "valueReference": {"reference": f"Patient/missing-{unique}"}},
    ]}
    location = kick_off(client, "/Patient/$export", method="POST", json=parameters,
                        headers={"Content-Type": "application/fhir+json"})
    manifest = manifest_of(client, location)
    exported = {f"{r['resourceType']}/{r['id']}" for items in download(client, manifest["output"]).values()
                for r in items}
    assert exported == {i for i in cohort.in_compartment[second] if not i.startswith("Condition/")}
    assert manifest["request"].endswith("/Patient/$export")
    outcomes = download(client, manifest["error"])["OperationOutcome"]
    assert any(f"Patient/missing-{unique}" in o["issue"][0]["diagnostics"] for o in outcomes)
    finish(client, location)


def test_group_export_of_an_unknown_group_is_404(client: httpx.Client, unique: str) -> None:
    response = client.get(f"/Group/none-{unique}/$export", headers=KICK_OFF)
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


# --- parameters --------------------------------------------------------------------------------


def test_since_exports_only_later_changes(client: httpx.Client, unique: str) -> None:
    make_cohort(client, unique, size=1)
    later = make_cohort(client, unique, size=1)
    since = client.get(f"/Patient/{later.patients[0]}").json()["meta"]["lastUpdated"]
    location = kick_off(client, f"/$export?_type=Observation,Condition&_since={quote(since)}&{marker_filters(unique)}")
    exported = exported_ids(client, location)
    expected = search_ids(client, f"/Observation?code={CODES}|{unique}&_lastUpdated=gt{quote(since)}") | search_ids(
        client, f"/Condition?code={CODES}|{unique}&_lastUpdated=gt{quote(since)}")
    assert exported == expected
    assert exported == {i for i in later.in_compartment[later.patients[0]] if not i.startswith("Patient/")} | {
        later.orphan}
    finish(client, location)


def test_type_limits_the_output_to_those_types(client: httpx.Client, unique: str) -> None:
    cohort = make_cohort(client, unique, size=2)
    location = kick_off(client, f"/Patient/$export?_type=Condition&{marker_filters(unique)}")
    assert exported_ids(client, location) == {
        i for ids in cohort.in_compartment.values() for i in ids if i.startswith("Condition/")}
    finish(client, location)


def test_type_filter_in_expands_a_value_set_stored_on_the_server(client: httpx.Client, unique: str) -> None:
    cohort = make_cohort(client, unique, size=1)
    url = f"https://example.org/fhir/ValueSet/{unique}"
    stored = client.post("/ValueSet", json={"resourceType": "ValueSet", "url": url, "status": "active",
                                            "compose": {"include": [{"system": CODES, "concept": [{"code": unique}]}]}})
    assert stored.status_code == 201, stored.text
    query = quote(f"Observation?code:in={url}", safe="")
    location = kick_off(client, f"/$export?_type=Observation&_typeFilter={query}")
    assert exported_ids(client, location) == {
        i for ids in cohort.in_compartment.values() for i in ids if i.startswith("Observation/")} | {cohort.orphan}
    finish(client, location)


@pytest.mark.parametrize("output_format", ["application/fhir+ndjson", "application/ndjson", "ndjson"])
def test_every_ndjson_output_format_is_accepted(client: httpx.Client, output_format: str) -> None:
    location = kick_off(client, f"/$export?_type=Organization&_outputFormat={quote(output_format, safe='')}")
    finish(client, location)  # as the test kit does: kick off, then cancel at once


@pytest.mark.parametrize(("path", "expression"), [
    ("/$export?_type=Foo", "_type"),
    ("/$export?_type=", "_type"),
    ("/$export?_since=yesterday", "_since"),
    ("/$export?_since=2024-01-01T00:00:00Z&_since=2024-02-01T00:00:00Z", "_since"),
    ("/$export?_outputFormat=text/csv", "_outputFormat"),
    ("/$export?_elements=Foo.id", "_elements"),
    ("/$export?_elements=name.given", "_elements"),
    ("/$export?includeAssociatedData=_everything", "includeAssociatedData"),
    ("/$export?includeAssociatedData=", "includeAssociatedData"),
    ("/$export?bogus=1", "bogus"),
    ("/$export?_typeFilter=Observation", "_typeFilter"),
    ("/$export?_typeFilter=Observation%3Fnonsense%3D1", "_typeFilter"),
    ("/$export?_typeFilter=Observation%3F_sort%3Ddate", "_typeFilter"),
    ("/$export?_typeFilter=Observation%3Fdate%3Dnotadate", "_typeFilter"),
    ("/$export?patient=Patient/1", "patient"),
    ("/Patient/$export?_type=Organization", "_type"),
    ("/Patient/$export?_typeFilter=Organization%3Fname%3Dx", "_typeFilter"),
])
def test_malformed_parameters_are_400(client: httpx.Client, path: str, expression: str) -> None:
    response = client.get(path, headers=KICK_OFF)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [expression]


def test_kick_off_needs_prefer_respond_async(client: httpx.Client) -> None:
    response = client.get("/$export", headers={"Accept": "application/fhir+json"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Prefer"]


def test_lenient_handling_ignores_unsupported_parameters_and_says_so(client: httpx.Client) -> None:
    location = kick_off(client, "/$export?_type=Organization&organizeOutputBy=Patient",
                        headers={"Prefer": "respond-async, handling=lenient"})
    manifest = manifest_of(client, location)
    outcomes = download(client, manifest["error"])["OperationOutcome"]
    assert "organizeOutputBy" in outcomes[0]["issue"][0]["diagnostics"]
    finish(client, location)


# --- cancellation, capacity, restarts, expiry ----------------------------------------------


def test_cancel_makes_the_status_url_404(client: httpx.Client) -> None:
    location = kick_off(client, "/$export?_type=Patient")
    cancelled = client.delete(location)
    assert cancelled.status_code == 202
    assert cancelled.json()["resourceType"] == "OperationOutcome"
    assert client.get(location).status_code == 404
    assert client.delete(location).status_code == 404
    assert client.get(f"/_export/{uuid.uuid4().hex}").status_code == 404


def test_a_running_job_stops_when_cancelled(database: Database, client: httpx.Client, unique: str,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_cohort(client, unique, size=2)
    worker = ExportWorker(Store(database.engine), Settings(database_url=database.url, export_dir=str(tmp_path)))
    worker.limits = ExportLimits(page_size=1)
    worker.heartbeat_seconds = 0.0
    real_heartbeat = worker.table.heartbeat
    seen: list[str] = []

    def beat_then_cancel(store: Store, job_id: str, owner: str, **progress: int) -> bool:
        seen.append(job_id)
        bulk_jobs.cancel(store, job_id)  # the client's DELETE arrives while the job runs
        return real_heartbeat(store, job_id, owner, **progress)

    monkeypatch.setattr(worker.table, "heartbeat", beat_then_cancel)  # this worker's table only
    request = ExportRequest(types=("Patient",), type_filters=(("Patient", f"family={unique}"),))
    job = bulk_jobs.create(worker.store, uuid.uuid4().hex, request, "http://x/fhir/$export", worker.owner)
    worker._run(job.id)
    assert seen == [job.id]
    assert bulk_jobs.get(worker.store, job.id) is None, "the cancelled job row is gone"
    assert list(tmp_path.iterdir()) == [], "its partial files are gone"
    worker.stop()


def test_a_busy_server_answers_429(database: Database, exporter: Callable[..., Exporter]) -> None:
    server = exporter(export_max_jobs=1)
    job_id = insert_job(database, ExportRequest(), owner=server.worker.owner)
    try:
        with server.client() as http:
            response = http.get("/$export", headers=KICK_OFF)
            assert response.status_code == 429
            assert int(response.headers["retry-after"]) > 0
            assert response.json()["issue"][0]["code"] == "throttled"
    finally:
        delete_job(database, job_id)


def test_a_job_left_running_by_a_dead_server_is_run_again(
    database: Database, exporter: Callable[..., Exporter], client: httpx.Client, unique: str, tmp_path: Path,
) -> None:
    cohort = make_cohort(client, unique, size=2)
    leftover = tmp_path / "interrupted-run"
    leftover.mkdir()
    (leftover / "Patient.1.ndjson").write_text('{"resourceType":"Patient","id":"half-writ')
    request = ExportRequest(types=("Patient",), type_filters=(("Patient", f"family={unique}"),))
    job_id = insert_job(database, request, heartbeat=datetime.now(UTC) - timedelta(hours=1), directory=str(leftover))
    server = exporter()  # the restarted server adopts the orphan when it starts
    with server.client() as http:
        location = f"{server.base}/_export/{job_id}"
        manifest = manifest_of(http, location)
        assert {p["id"] for p in download(http, manifest["output"])["Patient"]} == set(cohort.patients)
        assert not leftover.exists(), "the interrupted attempt's files were removed"
        job = bulk_jobs.get(Store(database.engine), job_id)
        assert job is not None and job.attempts == 2 and job.status == "completed"
        finish(http, location)


def test_a_job_interrupted_too_often_fails_with_a_reason(
    database: Database, exporter: Callable[..., Exporter],
) -> None:
    job_id = insert_job(database, ExportRequest(types=("Patient",)), attempts=jobworker.MAX_ATTEMPTS,
                        heartbeat=datetime.now(UTC) - timedelta(hours=1))
    server = exporter()
    with server.client() as http:
        response = wait(http, f"{server.base}/_export/{job_id}")
        assert response.status_code == 500
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert "interrupted" in outcome["issue"][0]["diagnostics"]
        finish(http, f"{server.base}/_export/{job_id}")


def test_an_orderly_shutdown_hands_jobs_back(database: Database, tmp_path: Path) -> None:
    store = Store(database.engine)
    worker = ExportWorker(store, Settings(database_url=database.url, export_dir=str(tmp_path)))
    job_id = insert_job(database, ExportRequest(types=("Organization",)), owner=worker.owner, status="running",
                        attempts=1)
    worker.stop()
    job = bulk_jobs.get(store, job_id)
    assert job is not None and job.status == "queued" and job.owner is None and job.attempts == 0
    delete_job(database, job_id)


def test_expired_jobs_and_their_files_disappear(exporter: Callable[..., Exporter], database: Database) -> None:
    server = exporter(export_expire_seconds=1)
    with server.client() as http:
        location = kick_off(http, "/$export?_type=Patient")
        manifest = manifest_of(http, location)
        assert any(server.export_dir.iterdir())
        time.sleep(1.1)
        assert http.get(location).status_code == 404
        assert http.get(manifest["output"][0]["url"]).status_code == 404
    server.worker.tend()
    assert not any(server.export_dir.iterdir())


# --- snapshot semantics --------------------------------------------------------------------------


def test_changes_during_an_export_do_not_leak_into_it(
    database: Database, client: httpx.Client, unique: str, tmp_path: Path,
) -> None:
    """The files hold the data as of transactionTime, however long the export takes."""
    cohort = make_cohort(client, unique, size=3)
    first, second, third = cohort.patients
    changed: list[str] = []

    def meanwhile(_written: int, _fraction: float) -> None:
        if changed:
            return
        patient = client.get(f"/Patient/{third}").json()
        client.put(f"/Patient/{third}", json={**patient, "gender": "other"})
        client.delete(f"/Patient/{second}")
        created = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": unique}]}).json()
        changed.append(created["id"])

    store = Store(database.engine)
    request = ExportRequest(types=("Patient",), type_filters=(("Patient", f"family={unique}"),))
    job = bulk_jobs.create(store, uuid.uuid4().hex, request, "http://x/fhir/$export", "test")
    try:
        result = run_export(store, request, tmp_path, job_id=job.id, limits=ExportLimits(page_size=1),
                            checkpoint=meanwhile)
    finally:
        bulk_jobs.remove(store, job.id)
    lines = [orjson.loads(line) for f in result.files for line in (tmp_path / f.name).read_bytes().splitlines()]
    by_id = {r["id"]: r for r in lines}
    assert changed and set(by_id) == {first, second, third}, "created meanwhile: not in; deleted meanwhile: in"
    assert "gender" not in by_id[third], "the export shows the version current at transactionTime"
    assert by_id[third]["meta"]["versionId"] == "1"
    assert len(lines) == 3


def test_system_export_keeps_resources_deleted_meanwhile(
    database: Database, client: httpx.Client, unique: str, tmp_path: Path,
) -> None:
    kept = client.post("/Organization", json={"resourceType": "Organization", "name": unique}).json()
    done: list[bool] = []

    def meanwhile(_written: int, _fraction: float) -> None:
        if not done:
            client.delete(f"/Organization/{kept['id']}")
            done.append(True)

    result = run_export(Store(database.engine), ExportRequest(types=("Organization",)), tmp_path,
                        limits=ExportLimits(page_size=1), checkpoint=meanwhile)
    ids = {orjson.loads(line)["id"] for f in result.files for line in (tmp_path / f.name).read_bytes().splitlines()}
    assert done and kept["id"] in ids


# --- the operator's command ----------------------------------------------------------------------


def test_cli_export_bulk_writes_files_and_manifest(
    database: Database, client: httpx.Client, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cohort = make_cohort(client, unique, size=2)
    since = client.get(f"/Patient/{cohort.patients[0]}").json()["meta"]["lastUpdated"]
    monkeypatch.setenv("FHIRFUS_DATABASE_URL", database.url)
    get_settings.cache_clear()
    try:
        out = tmp_path / "out"
        result = CliRunner().invoke(cli.app, ["export", "bulk", "--out", str(out), "--type", "Patient",
                                              "--since", since])
        assert result.exit_code == 0, result.output
        manifest = orjson.loads((out / "manifest.json").read_bytes())
        assert [item["type"] for item in manifest["output"]] == ["Patient"]
        ids = {f"Patient/{orjson.loads(line)['id']}" for item in manifest["output"]
               for line in (out / item["url"]).read_bytes().splitlines()}
        assert ids == search_ids(client, f"/Patient?_lastUpdated=gt{quote(since)}&_count=1000")
        assert f"Patient/{cohort.patients[1]}" in ids and f"Patient/{cohort.patients[0]}" not in ids
        bad = CliRunner().invoke(cli.app, ["export", "bulk", "--out", str(out), "--type", "Nope"])
        assert bad.exit_code == 2
    finally:
        get_settings.cache_clear()


def test_a_stale_job_of_this_very_process_is_picked_up_again(database: Database, tmp_path: Path) -> None:
    """A job whose outcome could not be recorded (say, the database was briefly away) is not stuck."""
    store = Store(database.engine)
    worker = ExportWorker(store, Settings(database_url=database.url, export_dir=str(tmp_path)))
    job_id = insert_job(database, ExportRequest(types=("Organization",)), owner=worker.owner,
                        heartbeat=datetime.now(UTC) - timedelta(hours=1))
    try:
        worker.tend()
        deadline = time.monotonic() + TIMEOUT_S
        while (job := bulk_jobs.get(store, job_id)) is not None and job.status != "completed":
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job is not None and job.attempts == 2
    finally:
        worker.stop()
        delete_job(database, job_id)
