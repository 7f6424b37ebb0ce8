"""Bulk ``$import``: NDJSON files named by URL (served here by a real ``http.server``) or uploaded,
loaded asynchronously in the Bulk Data pattern, with one OperationOutcome per refused line, on
both databases."""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from auth_helpers import make_client
from conftest import TEST_DEID_KEY, Database, serving
from sqlalchemy import String, cast, func, select, tuple_

from fhirfus.auth.access import DEVELOPMENT
from fhirfus.bulk.imports import jobs
from fhirfus.bulk.imports.load import ImportFilesLost, derived_id, run_import
from fhirfus.bulk.imports.service import begin_upload, finish_upload
from fhirfus.bulk.imports.service import kick_off as service_kick_off
from fhirfus.bulk.imports.worker import ImportWorker
from fhirfus.db.tables import resource_history, resources
from fhirfus.db.visibility import site_label
from fhirfus.settings import Settings
from fhirfus.store.repository import Store
from fhirfus.testing import free_port

SYNTHEA = Path("/work/shared/data/synthea-bulk-10-patients")
ASYNC = {"Prefer": "respond-async"}


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A static file server on loopback: the Synthea NDJSON under ``/synthea/``, tests' own files at ``/``."""
    root = tmp_path_factory.mktemp("served")
    (root / "synthea").symlink_to(SYNTHEA)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()


def import_settings(database: Database, tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": database.url, "auth": "off", "deid_key": TEST_DEID_KEY,
                              "export_dir": str(tmp), "import_allowed_hosts": ("127.0.0.1",)}
    return Settings(**(values | overrides))


@pytest.fixture(scope="module")
def importer(database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server that may fetch from loopback (FHIRFUS_IMPORT_ALLOWED_HOSTS=127.0.0.1), auth off."""
    settings = import_settings(database, tmp_path_factory.mktemp("imports"))
    with serving(settings, Store(database.engine)) as (root, _app):
        yield root + "/fhir"


def parameters(*inputs: tuple[str, str]) -> dict:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
        {"name": "inputSource", "valueUri": "https://synthea.example.org"},
        {"name": "storageDetail", "part": [{"name": "type", "valueCode": "https"}]},
        *({"name": "input", "part": [{"name": "type", "valueCode": t}, {"name": "url", "valueUri": u}]}
          for t, u in inputs)]}


def synthea_inputs(files_root: str) -> list[tuple[str, str]]:
    return [(p.name.split(".")[0], f"{files_root}/synthea/{p.name}") for p in sorted(SYNTHEA.glob("*.ndjson"))
            if p.name != "log.ndjson"]


def kick_off(http: httpx.Client, body: Any, **kwargs: Any) -> str:
    answer = http.post("/$import", headers=ASYNC | kwargs.pop("headers", {}), **({"json": body} | kwargs))
    assert answer.status_code == 202, answer.text
    return answer.headers["Content-Location"]


def finish(http: httpx.Client, location: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        answer = http.get(location)
        if answer.status_code != 202:
            assert answer.status_code == 200, answer.text
            return answer.json()
        assert answer.headers["X-Progress"] and int(answer.headers["Retry-After"]) >= 1
        assert time.monotonic() < deadline, "import did not finish"
        time.sleep(0.2)


def lines_of(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def stored(database: Database, keys: list[tuple[str, str]]) -> tuple[int, int]:
    """(current rows, history rows) of these ``(type, id)``."""
    current = versions = 0
    with database.engine.connect() as conn:
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            current += conn.execute(select(func.count()).select_from(resources).where(
                tuple_(resources.c.res_type, resources.c.res_id).in_(chunk), resources.c.deleted.is_(False))).scalar_one()
            versions += conn.execute(select(func.count()).select_from(resource_history).where(
                tuple_(resource_history.c.res_type, resource_history.c.res_id).in_(chunk))).scalar_one()
    return current, versions


def synthea_keys() -> list[tuple[str, str]]:
    return [(r["resourceType"], r["id"]) for p in SYNTHEA.glob("*.000.ndjson") for r in lines_of(p)]


# --- Synthea from a local HTTP server -------------------------------------------------------------


def test_synthea_ndjson_from_an_http_server_loads_every_line_and_a_second_import_converges(
        importer: str, files: tuple[str, Path], database: Database) -> None:
    inputs = synthea_inputs(files[0])
    keys = synthea_keys()
    with httpx.Client(base_url=importer, timeout=60) as http:
        result = finish(http, kick_off(http, parameters(*inputs)))
        assert result["error"] == []
        expected = {url: len(lines_of(SYNTHEA / url.rsplit("/", 1)[1])) for _, url in inputs}
        assert {o["inputUrl"]: o["count"] for o in result["output"]} == expected
        assert stored(database, keys) == (len(keys), len(keys))
        patient = http.get(f"/Patient/{keys[[k[0] for k in keys].index('Patient')][1]}")
        assert patient.status_code == 200

        again = finish(http, kick_off(http, parameters(*inputs)))
        assert sum(o["count"] for o in again["output"]) == len(keys)
        assert stored(database, keys) == (len(keys), len(keys))  # no duplicate, not even a new version


def test_an_export_manifest_is_accepted_as_the_kick_off(importer: str, files: tuple[str, Path]) -> None:
    root, served = files
    patient = {"resourceType": "Patient", "id": f"m-{uuid.uuid4().hex[:12]}", "gender": "female"}
    (served / f"{patient['id']}.ndjson").write_bytes(orjson.dumps(patient) + b"\n")
    manifest = {"transactionTime": "2026-01-01T00:00:00Z", "request": "https://elsewhere.example/fhir/$export",
                "requiresAccessToken": False, "output": [{"type": "Patient", "url": f"{root}/{patient['id']}.ndjson"}],
                "error": []}
    with httpx.Client(base_url=importer, timeout=30) as http:
        result = finish(http, kick_off(http, manifest))
        assert result["output"][0]["count"] == 1
        assert http.get(f"/Patient/{patient['id']}").json()["gender"] == "female"


# --- errors per line ------------------------------------------------------------------------------


def test_bad_lines_become_operation_outcomes_with_line_numbers_and_nothing_else_is_lost(
        importer: str, files: tuple[str, Path]) -> None:
    root, served = files
    tag = uuid.uuid4().hex[:12]
    good = [{"resourceType": "Patient", "id": f"{tag}-{n}", "gender": "male"} for n in range(3)]
    lines = [
        orjson.dumps(good[0]),                                                        # 1
        b'{"resourceType": "Patient", "id": "broken"',                                # 2 not JSON
        orjson.dumps({"resourceType": "Observation", "id": f"{tag}-obs"}),            # 3 wrong type
        orjson.dumps(good[1]),                                                        # 4
        b"",                                                                          # 5 blank: skipped
        orjson.dumps({"resourceType": "Patient", "id": f"{tag}-bad", "gender": "x"}),  # 6 bad code
        orjson.dumps({"resourceType": "Patient", "id": f"{tag}-ref",
                      "generalPractitioner": [{"reference": f"Practitioner/{tag}-none"}]}),  # 7 dangling
        orjson.dumps(good[2]),                                                        # 8
    ]
    name = f"bad-{tag}.ndjson"
    (served / name).write_bytes(b"\n".join(lines) + b"\n")
    url = f"{root}/{name}"
    with httpx.Client(base_url=importer, timeout=30) as http:
        result = finish(http, kick_off(http, parameters(("Patient", url))))
        assert result["output"] == [{"type": "Patient", "inputUrl": url, "count": 3}]
        [error] = result["error"]
        assert error["inputUrl"] == url and error["count"] == 4
        outcomes = [orjson.loads(line) for line in http.get(error["url"]).content.splitlines()]
        issues = [o["issue"][0] for o in outcomes]
        assert [i["diagnostics"].split(": ", 1)[0] for i in issues] == [f"{url} line {n}" for n in (2, 3, 6, 7)]
        assert issues[1]["expression"] == ["resourceType"]
        assert issues[2]["expression"] == ["Patient.gender"]
        assert issues[3]["expression"] == ["Patient.generalPractitioner[0]"]
        assert f"Practitioner/{tag}-none" in issues[3]["diagnostics"]
        for patient in good:
            assert http.get(f"/Patient/{patient['id']}").status_code == 200
        for refused in ("bad", "ref"):
            assert http.get(f"/Patient/{tag}-{refused}").status_code == 404


def test_ndjson_uploaded_as_the_body_is_imported(importer: str) -> None:
    tag = uuid.uuid4().hex[:12]
    body = b"\n".join(orjson.dumps({"resourceType": "Patient", "id": f"{tag}-{n}"}) for n in range(5))
    with httpx.Client(base_url=importer, timeout=30) as http:
        location = kick_off(http, None, content=body,
                            headers={"Content-Type": "application/fhir+ndjson"}, params={"type": "Patient"})
        result = finish(http, location)
        assert result["output"] == [{"type": "Patient", "inputUrl": "upload", "count": 5}]
        assert http.get(f"/Patient?_id={tag}-0,{tag}-4").json()["total"] == 2


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.org/Patient.ndjson", "not an http(s) URL"),
    ("http://127.0.0.1:9/Patient.ndjson", "non-public address"),
    ("http://user:secret@example.org/Patient.ndjson", "credentials"),
])
def test_urls_the_server_will_not_fetch_are_400_naming_the_input(client: httpx.Client, url: str, reason: str) -> None:
    answer = client.post("/$import", headers=ASYNC, json=parameters(("Patient", url)))
    assert answer.status_code == 400, answer.text
    issue = answer.json()["issue"][0]
    assert reason in issue["diagnostics"] and issue["expression"] == ["input[0].url"]


@pytest.mark.parametrize(("body", "expression"), [
    ({"resourceType": "Parameters", "parameter": [{"name": "inputFormat", "valueCode": "text/csv"}]},
     "Parameters.parameter[0].value"),
    (parameters(("NoSuchType", "https://example.org/x.ndjson")), "Parameters.parameter[3].part.type"),
    ({"resourceType": "Parameters", "parameter": [{"name": "inputFormat", "valueCode": "application/fhir+ndjson"}]},
     "input"),
    ({"output": "nope"}, "output"),
])
def test_malformed_kick_offs_are_400_naming_the_element(client: httpx.Client, body: dict, expression: str) -> None:
    answer = client.post("/$import", headers=ASYNC, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["issue"][0]["expression"] == [expression]


def test_kick_off_needs_prefer_respond_async(client: httpx.Client) -> None:
    answer = client.post("/$import", json=parameters(("Patient", "https://example.org/p.ndjson")))
    assert answer.status_code == 400 and answer.json()["issue"][0]["expression"] == ["Prefer"]


# --- cancel and resume ----------------------------------------------------------------------------


class Gate(SimpleHTTPRequestHandler):
    """Serves a file only once ``opened`` is set: the job is caught in its fetch phase."""

    opened = threading.Event()

    def do_GET(self) -> None:
        self.opened.wait(30)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_delete_cancels_a_running_import(importer: str, tmp_path: Path, database: Database) -> None:
    tag = uuid.uuid4().hex[:12]
    (tmp_path / "p.ndjson").write_bytes(orjson.dumps({"resourceType": "Patient", "id": tag}) + b"\n")
    Gate.opened.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Gate, directory=str(tmp_path)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with httpx.Client(base_url=importer, timeout=30) as http:
            location = kick_off(http, parameters(("Patient", f"http://127.0.0.1:{httpd.server_address[1]}/p.ndjson")))
            assert http.get(location).status_code == 202
            assert http.delete(location).status_code == 202
            Gate.opened.set()
            assert http.get(location).status_code == 404
            time.sleep(1.0)
            assert http.get(f"/Patient/{tag}").status_code == 404
            assert stored(database, [("Patient", tag)]) == (0, 0)
    finally:
        Gate.opened.set()
        httpd.shutdown()


class ProcessDied(Exception):
    """Stands for ``kill -9``: the run stops between two chunks without handing the job back."""


def test_a_job_whose_process_died_is_resumed_from_its_last_committed_chunk(
        database: Database, files: tuple[str, Path], tmp_path: Path) -> None:
    root, served = files
    tag = uuid.uuid4().hex[:12]
    name = f"resume-{tag}.ndjson"
    (served / name).write_bytes(b"\n".join(
        orjson.dumps({"resourceType": "Patient", "id": f"{tag}-{n}"}) for n in range(10)) + b"\n")
    settings = import_settings(database, tmp_path)
    store = Store(database.engine)
    first = ImportWorker(store, settings, chunk_lines=3)
    first.submit = lambda job_id: None  # type: ignore[method-assign]  # the dying process runs it by hand
    job_id = service_kick_off(first, DEVELOPMENT, parameters(("Patient", f"{root}/{name}")),
                              request_url="test", base_url="")
    job = jobs.start(store, job_id, first.owner)
    assert job is not None

    def dies_after_two_chunks() -> None:
        current = jobs.get(store, job_id)
        if current is not None and current.progress["line"] == 6:
            raise ProcessDied

    with pytest.raises(ProcessDied):
        run_import(store, job, first.owner, first.limits, checkpoint=dies_after_two_chunks, chunk_lines=3)
    left = jobs.get(store, job_id)
    assert left is not None and left.status == jobs.RUNNING and left.progress["line"] == 6
    assert stored(database, [("Patient", f"{tag}-{n}") for n in range(10)])[0] == 6

    second = ImportWorker(store, settings, lease=timedelta(0), chunk_lines=3)
    try:
        second.tend()  # adopts the job whose owner stopped beating
        deadline = time.monotonic() + 120  # a wait, not a speed test: generous for a loaded machine
        while (done := jobs.get(store, job_id)) is not None and done.status != jobs.COMPLETED:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        second.stop()
    assert done is not None and done.attempts == 2 and done.owner == second.owner
    assert done.progress["chunks"] == 4 and done.progress["inputs"][0] == {"read": 10, "loaded": 10, "errors": 0}
    assert stored(database, [("Patient", f"{tag}-{n}") for n in range(10)]) == (10, 10)  # each line written once


# --- sites ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secure_importer(database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = import_settings(database, tmp_path_factory.mktemp("secure-imports"), auth="smart",
                               token_secret="test-secret-" + uuid.uuid4().hex, rate_limit_per_minute=100_000,
                               token_rate_limit_per_minute=100_000, token_rate_limit_per_address=100_000)
    with serving(settings, Store(database.engine)) as (root, _app):
        yield root


def test_a_site_clients_import_lands_under_its_site_and_stays_there(
        secure_importer: str, files: tuple[str, Path], database: Database) -> None:
    root, _served = files
    store = Store(database.engine)
    suffix = uuid.uuid4().hex[:8]
    site_a, site_b = f"A{suffix}", f"B{suffix}"
    a = make_client(store, secure_importer + "/auth/token", role="site", site=site_a, scope="system/*.cruds")
    b = make_client(store, secure_importer + "/auth/token", role="site", site=site_b, scope="system/*.cruds")
    base = secure_importer + "/fhir"
    with a.http(base) as http_a, b.http(base) as http_b, httpx.Client(base_url=base) as anonymous:
        inputs = [(t, u) for t, u in synthea_inputs(root) if t in ("Organization", "Practitioner", "Location",
                                                                   "Patient", "Encounter")]
        body = parameters(*inputs)
        assert anonymous.post("/$import", headers=ASYNC, json=body).status_code == 401
        location = kick_off(http_a, body)
        assert http_b.get(location).status_code == 404
        result = finish(http_a, location)
        assert result["error"] == []
        patients = lines_of(SYNTHEA / "Patient.000.ndjson")
        assert sum(o["count"] for o in result["output"]) == sum(
            len(lines_of(SYNTHEA / f"{t}.000.ndjson")) for t, _ in inputs)
        mine = http_a.get(f"/Patient/{derived_id(site_a, 'Patient', patients[0]['id'])}")
        assert mine.status_code == 200 and site_label(mine.json()) == site_a
        encounter = lines_of(SYNTHEA / "Encounter.000.ndjson")[0]
        stored_encounter = http_a.get(f"/Encounter/{derived_id(site_a, 'Encounter', encounter['id'])}").json()
        assert stored_encounter["subject"]["reference"] == \
            f"Patient/{derived_id(site_a, 'Patient', encounter['subject']['reference'].split('/')[1])}"
        identifier = patients[0]["identifier"][0]
        query = f"/Patient?identifier={identifier['system']}|{identifier['value']}"
        assert http_a.get(query).json()["total"] >= 1
        assert all(site_label(e["resource"]) != site_a for e in http_b.get(query).json().get("entry", []))
        assert http_b.get(mine.request.url.path.removeprefix("/fhir")).status_code == 404
        assert http_b.delete(location).status_code == 404
        assert http_a.get(location).status_code == 200
        provenance = f"/Provenance/import-{location.rsplit('/', 1)[1]}"
        assert site_label(http_a.get(provenance).json()) == site_a
        assert http_b.get(provenance).status_code == 404
    job_query = base64.b64encode(f"job={location.rsplit('/', 1)[1]}".encode()).decode()
    with database.engine.connect() as conn:
        audited = conn.execute(select(func.count()).select_from(resources).where(
            resources.c.res_type == "AuditEvent", cast(resources.c.content, String).contains(job_query))).scalar_one()
    assert audited == 1  # the job's own AuditEvent, committed with its last write


# --- limits, provenance, the README -----------------------------------------------------------------


def test_inputs_beyond_the_byte_limit_fail_the_job_with_a_reason(
        database: Database, files: tuple[str, Path], tmp_path: Path) -> None:
    root, _served = files
    settings = import_settings(database, tmp_path, import_max_bytes=1000)
    worker = ImportWorker(Store(database.engine), settings)
    try:
        job_id = service_kick_off(worker, DEVELOPMENT, parameters(("Patient", f"{root}/synthea/Patient.000.ndjson")),
                                  request_url="test", base_url="")
        deadline = time.monotonic() + 120  # a wait, not a speed test: generous for a loaded machine
        while (job := jobs.get(worker.store, job_id)) is not None and job.status in jobs.ACTIVE:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        worker.stop()
    assert job is not None and job.status == jobs.FAILED
    assert job.error is not None and "exceed the limit of 1000 bytes" in job.error
    assert job.progress["inputs"][0]["loaded"] == 0


def test_each_job_leaves_a_provenance_of_what_it_loaded(importer: str) -> None:
    tag = uuid.uuid4().hex[:12]
    body = b"\n".join(orjson.dumps({"resourceType": "Patient", "id": f"{tag}-{n}"}) for n in range(2))
    with httpx.Client(base_url=importer, timeout=30) as http:
        location = kick_off(http, None, content=body, headers={"Content-Type": "application/fhir+ndjson"})
        finish(http, location)
        provenance = http.get(f"/Provenance/import-{location.rsplit('/', 1)[1]}").json()
    assert {t["reference"] for t in provenance["target"]} == {f"Patient/{tag}-0", f"Patient/{tag}-1"}
    assert "2 resources loaded, 0 lines refused" in provenance["activity"]["text"]


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_example_runs_as_written(database: Database) -> None:
    if database.backend != "sqlite":
        pytest.skip("the README example runs on its own SQLite file")
    synthea = REPO.parent / "shared" / "data" / "synthea-bulk-10-patients"
    if not synthea.is_dir():
        pytest.skip(f"the README example imports the shared Synthea files, absent at {synthea}")
    [block] = re.findall(r"```sh bulk-import\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    for path in REPO.glob("var/bulk-import.db*"):
        path.unlink()
    try:
        done = subprocess.run(["bash", "-e", "-c", block], cwd=REPO, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        manifests = [orjson.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert [[o["count"] for o in m["output"]] for m in manifests] == [[43, 13], [13]]
    finally:
        for path in [*REPO.glob("var/bulk-import.db*"), REPO / "var" / "import-status.json"]:
            path.unlink(missing_ok=True)


def test_an_import_whose_server_is_killed_resumes_in_another_process(
        database: Database, files: tuple[str, Path], tmp_path: Path) -> None:
    """``kill -9`` of the server mid-import; a worker of another process adopts the job and loads
    the rest: every line read once, loaded once."""
    root, served = files
    tag = uuid.uuid4().hex[:12]
    name = f"kill-{tag}.ndjson"
    total = 4_000
    (served / name).write_bytes(b"\n".join(
        orjson.dumps({"resourceType": "Patient", "id": f"{tag}-{n}", "gender": "other"}) for n in range(total)) + b"\n")
    port = free_port()
    environment = os.environ | {"FHIRFUS_DATABASE_URL": database.url, "FHIRFUS_AUTH": "off",
                                "FHIRFUS_IMPORT_ALLOWED_HOSTS": "127.0.0.1", "FHIRFUS_EXPORT_DIR": str(tmp_path)}
    server = subprocess.Popen([str(Path(sys.executable).parent / "fhirfus"), "serve", "--port", str(port)],
                              env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = Store(database.engine)
    try:
        base = f"http://127.0.0.1:{port}/fhir"
        deadline = time.monotonic() + 120  # a wait, not a speed test: generous for a loaded machine
        while True:
            try:
                httpx.get(f"{base}/metadata", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=30) as http:
            job_id = kick_off(http, parameters(("Patient", f"{root}/{name}"))).rsplit("/", 1)[1]
        deadline = time.monotonic() + 240
        while (job := jobs.get(store, job_id)) is None or job.progress["chunks"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
    finally:
        server.kill()
    killed = jobs.get(store, job_id)
    assert killed is not None and killed.status == jobs.RUNNING and 0 < killed.progress["line"] < total

    survivor = ImportWorker(store, import_settings(database, tmp_path), lease=timedelta(0))
    try:
        survivor.tend()
        deadline = time.monotonic() + 120
        while (done := jobs.get(store, job_id)) is not None and done.status != jobs.COMPLETED:
            assert done.status in jobs.ACTIVE and time.monotonic() < deadline, done.error
            time.sleep(0.2)
    finally:
        survivor.stop()
    assert done is not None and done.attempts == 2
    assert done.progress["inputs"][0] == {"read": total, "loaded": total, "errors": 0}
    assert done.progress["chunks"] == total // 500
    assert stored(database, [("Patient", f"{tag}-{n}") for n in range(total)]) == (total, total)


class Redirect(SimpleHTTPRequestHandler):
    """Redirects every request to ``localhost``: a loopback name the allowed hosts do not list."""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", f"http://localhost:{self.server.server_address[1]}/Patient.ndjson")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_redirect_to_a_host_that_is_not_allowed_fails_the_job(importer: str) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with httpx.Client(base_url=importer, timeout=30) as http:
            location = kick_off(http, parameters(("Patient", f"http://127.0.0.1:{httpd.server_address[1]}/p.ndjson")))
            deadline = time.monotonic() + 120  # a wait, not a speed test: generous for a loaded machine
            while (answer := http.get(location)).status_code == 202:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        httpd.shutdown()
    assert answer.status_code == 500
    assert "non-public address" in answer.json()["issue"][0]["diagnostics"]


def test_ping_and_pull_imports_the_files_of_an_export_manifest_url(importer: str) -> None:
    """``manifestUrl``: the status URL of a finished ``$export`` (here of the same server, with
    authentication off, so its files need no token)."""
    tag = uuid.uuid4().hex[:12]
    with httpx.Client(base_url=importer, timeout=30) as http:
        for n in range(3):
            created = http.post("/Patient", json={"resourceType": "Patient",
                                                  "identifier": [{"system": f"urn:pnp:{tag}", "value": str(n)}]})
            assert created.status_code == 201
        exported = http.get("/$export", headers=ASYNC, params={"_type": "Patient",
                                                               "_typeFilter": f"Patient?identifier=urn:pnp:{tag}|"})
        assert exported.status_code == 202, exported.text
        manifest_url = exported.headers["Content-Location"]
        deadline = time.monotonic() + 120  # a wait, not a speed test: generous for a loaded machine
        while http.get(manifest_url).status_code == 202:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        body = {"resourceType": "Parameters", "parameter": [{"name": "manifestUrl", "valueUrl": manifest_url}]}
        result = finish(http, kick_off(http, body))
        assert [(o["type"], o["count"]) for o in result["output"]] == [("Patient", 3)]
        assert result["output"][0]["inputUrl"].startswith(manifest_url + "/")

        gone = {"resourceType": "Parameters", "parameter": [{"name": "manifestUrl",
                                                             "valueUrl": f"{importer}/_export/{uuid.uuid4().hex}"}]}
        refused = http.post("/$import", headers=ASYNC, json=gone)
        assert refused.status_code == 400 and "answered 404" in refused.json()["issue"][0]["diagnostics"]
        assert refused.json()["issue"][0]["expression"] == ["Parameters.parameter[0].value"]


def test_two_sites_importing_the_same_file_each_get_their_own_copy(secure_importer: str, database: Database) -> None:
    store = Store(database.engine)
    suffix = uuid.uuid4().hex[:8]
    token_url = secure_importer + "/auth/token"
    sites = {name: f"{name}{suffix}" for name in ("A", "B")}
    clients = {name: make_client(store, token_url, role="site", site=site, scope="system/*.cruds")
               for name, site in sites.items()}
    shared_id = f"shared-{suffix}"
    lines = b"\n".join([
        orjson.dumps({"resourceType": "Patient", "id": shared_id, "name": [{"family": suffix}]}),
        orjson.dumps({"resourceType": "Observation", "id": f"obs-{suffix}", "status": "final", "code": {"text": suffix},
                      "subject": {"reference": f"Patient/{shared_id}"}}),
        orjson.dumps({"resourceType": "Patient", "id": f"other-{suffix}",
                      "meta": {"security": [{"system": "https://fhirfus.org/fhir/CodeSystem/site", "code": "elsewhere"}]}}),
    ])
    base = secure_importer + "/fhir"
    for name, site in sites.items():
        with clients[name].http(base) as http:
            result = finish(http, kick_off(http, None, content=lines, headers={"Content-Type": "application/fhir+ndjson"}))
            assert result["output"][0]["count"] == 2
            [refused] = orjson.loads(http.get(result["error"][0]["url"]).content)["issue"]
            assert refused["diagnostics"].startswith("upload line 3: ") and refused["expression"] == ["Patient.meta.security"]
            observation = http.get(f"/Observation/{derived_id(site, 'Observation', f'obs-{suffix}')}").json()
            assert observation["subject"]["reference"] == f"Patient/{derived_id(site, 'Patient', shared_id)}"
            other = "B" if name == "A" else "A"
            assert http.get(f"/Patient/{derived_id(sites[other], 'Patient', shared_id)}").status_code == 404
            assert http.get(f"/Patient/{shared_id}").status_code == 404  # the file's own id is not used
    with database.engine.connect() as conn:
        owners = conn.execute(select(resources.c.site).where(resources.c.res_type == "Patient", resources.c.res_id.in_(
            [derived_id(site, "Patient", shared_id) for site in sites.values()]))).scalars().all()
    assert sorted(owners) == sorted(sites.values())


def test_an_upload_beyond_the_byte_limit_is_413_and_an_empty_one_400_leaving_nothing(
        database: Database, tmp_path: Path) -> None:
    settings = import_settings(database, tmp_path, import_max_bytes=100)
    with serving(settings, Store(database.engine)) as (root, _app), httpx.Client(base_url=root + "/fhir") as http:
        ndjson = {"Content-Type": "application/fhir+ndjson"}
        big = b"\n".join(orjson.dumps({"resourceType": "Patient", "id": f"big-{n}"}) for n in range(10))
        too_big = http.post("/$import", headers=ASYNC | ndjson, content=big)
        assert too_big.status_code == 413 and too_big.json()["issue"][0]["code"] == "too-costly"
        empty = http.post("/$import", headers=ASYNC | ndjson, content=b"")
        assert empty.status_code == 400 and empty.json()["issue"][0]["expression"] == ["body"]
        unknown = http.post("/$import", headers=ASYNC | ndjson, params={"type": "NoSuchType"}, content=b"{}")
        assert unknown.status_code == 400 and unknown.json()["issue"][0]["expression"] == ["type"]
    assert list((tmp_path / "imports").iterdir()) == []


def test_a_chunk_with_many_refused_lines_is_written_line_by_line_and_loses_no_good_line(
        importer: str, files: tuple[str, Path]) -> None:
    root, served = files
    tag = uuid.uuid4().hex[:12]
    lines = [orjson.dumps({"resourceType": "Patient", "id": f"{tag}-{n}", "gender": "x" if n % 2 else "male"})
             for n in range(30)]
    name = f"many-{tag}.ndjson"
    (served / name).write_bytes(b"\n".join(lines) + b"\n")
    with httpx.Client(base_url=importer, timeout=30) as http:
        result = finish(http, kick_off(http, parameters(("Patient", f"{root}/{name}"))))
        assert result["output"][0]["count"] == 15 and result["error"][0]["count"] == 15
        outcomes = [orjson.loads(line) for line in http.get(result["error"][0]["url"]).content.splitlines()]
        assert [o["issue"][0]["diagnostics"].split(": ", 1)[0].rsplit(" ", 1)[1] for o in outcomes] == \
            [str(n + 1) for n in range(30) if n % 2]
        assert all(o["issue"][0]["expression"] == ["Patient.gender"] for o in outcomes)
        found = http.get("/Patient", params={"_id": ",".join(f"{tag}-{n}" for n in range(30)), "_count": 100}).json()
        assert sorted(e["resource"]["id"] for e in found["entry"]) == sorted(f"{tag}-{n}" for n in range(0, 30, 2))


def test_a_job_whose_files_are_gone_fails_saying_where_they_should_be(database: Database, tmp_path: Path) -> None:
    worker = ImportWorker(Store(database.engine), import_settings(database, tmp_path))
    worker.submit = lambda job_id: None  # type: ignore[method-assign]  # run by hand below
    job_id, directory = begin_upload(worker, DEVELOPMENT, "Patient")
    (directory / "input-0.ndjson").write_bytes(b'{"resourceType": "Patient"}\n')
    finish_upload(worker, DEVELOPMENT, job_id, directory, "Patient", request_url="test", base_url="")
    shutil.rmtree(directory)
    job = jobs.start(worker.store, job_id, worker.owner)
    assert job is not None
    with pytest.raises(ImportFilesLost, match="FHIRFUS_EXPORT_DIR must be one directory shared"):
        run_import(worker.store, job, worker.owner, worker.limits)
    jobs.remove(worker.store, job_id)


def test_a_resource_that_appears_twice_is_written_in_file_order(importer: str, database: Database) -> None:
    tag = uuid.uuid4().hex[:12]
    body = b"\n".join(orjson.dumps({"resourceType": "Patient", "id": tag, "gender": gender})
                      for gender in ("male", "female"))
    with httpx.Client(base_url=importer, timeout=30) as http:
        result = finish(http, kick_off(http, None, content=body, headers={"Content-Type": "application/fhir+ndjson"}))
        assert result["output"][0]["count"] == 2 and result["error"] == []
        assert http.get(f"/Patient/{tag}").json()["gender"] == "female"
    assert stored(database, [("Patient", tag)]) == (1, 2)
