"""``$analysis-export`` over HTTP on both databases: the Bulk Data async flow and its refusals."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from auth_helpers import make_client
from conftest import TEST_DEID_KEY, serving

from fhirfus.analysis.jobs import AnalysisJobs, JobState
from fhirfus.db.engine import make_engine
from fhirfus.domain.synthetic_cohort import cohort_rows, write_site_file
from fhirfus.ingest.site_import import import_files
from fhirfus.settings import Settings
from fhirfus.store.repository import Store

ASYNC = {"Prefer": "respond-async"}


def load_cohort(server, client: httpx.Client, tmp_path: Path, site: str, patients: int = 5, seed: int = 3) -> str:
    """Import a synthetic site file and put its patients in a Group; returns the Group id."""
    path = write_site_file(tmp_path / f"{site}.csv", cohort_rows(patients, seed=seed))
    report = import_files(Store(server.database.engine), "site-registry", site, [path])
    assert report.ok, report.errors[:3]
    found = client.get("/Patient", params={"identifier": f"https://fhirfus.org/fhir/sid/site-patient/{site}|",
                                           "_count": 100}).json()
    members = [{"entity": {"reference": f"Patient/{e['resource']['id']}"}} for e in found["entry"]]
    group = {"resourceType": "Group", "type": "person", "actual": True, "member": members}
    created = client.post("/Group", json=group, headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def wait_for(client: httpx.Client, url: str, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(url)
        if response.status_code != 202 or time.monotonic() > deadline:
            return response
        assert response.headers.get("X-Progress")
        time.sleep(0.1)


@pytest.fixture
def deid_key() -> str:
    """The key the test servers run with (``conftest.TEST_DEID_KEY``)."""
    return TEST_DEID_KEY


@pytest.fixture(scope="module")
def cohort_group(server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Group of five imported synthetic patients on this backend."""
    with server.client() as client:
        return load_cohort(server, client, tmp_path_factory.mktemp("api"), f"API{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
def finished(server, cohort_group: str) -> Iterator[tuple[httpx.Response, dict]]:
    """(kick-off response, manifest) of one completed CSV export of ``cohort_group``."""
    with server.client() as client:
        kick = client.get(f"/Group/{cohort_group}/$analysis-export", headers=ASYNC)
        done = wait_for(client, kick.headers["Content-Location"])
        assert done.status_code == 200, done.text
        yield kick, done.json()
        client.delete(kick.headers["Content-Location"])


def test_kick_off_answers_202_with_a_status_url(finished: tuple[httpx.Response, dict]) -> None:
    kick, _ = finished
    assert kick.status_code == 202
    assert "/_analysis/" in kick.headers["Content-Location"]
    assert kick.json()["resourceType"] == "OperationOutcome"


def test_completed_job_answers_200_with_a_manifest_listing_every_file(finished: tuple[httpx.Response, dict]) -> None:
    _, manifest = finished
    assert {o["type"] for o in manifest["output"]} == {"patients", "assessments", "dictionary", "statistics", "report"}
    assert manifest["transactionTime"] and manifest["request"].endswith("$analysis-export")
    assert manifest["extension"]["policy"] == "safe-harbor" and len(manifest["extension"]["policySha256"]) == 64
    assert manifest["error"] == []


def test_every_manifest_url_downloads_its_file(client: httpx.Client, finished: tuple[httpx.Response, dict]) -> None:
    _, manifest = finished
    files = {o["type"]: client.get(o["url"]) for o in manifest["output"]}
    assert all(r.status_code == 200 for r in files.values())
    patients = list(csv.DictReader(io.StringIO(files["patients"].text)))
    assert len(patients) == 5 == next(o["count"] for o in manifest["output"] if o["type"] == "patients")
    assert json.loads(files["statistics"].text)["cohort"]["patients"] == 5
    assert files["report"].headers["content-type"].startswith("text/html")
    assert files["report"].text.startswith("<!DOCTYPE html>")


def test_parquet_output_format_gives_parquet_files(client: httpx.Client, cohort_group: str, deid_key: str) -> None:
    kick = client.get(f"/Group/{cohort_group}/$analysis-export", params={"_outputFormat": "parquet"}, headers=ASYNC)
    manifest = wait_for(client, kick.headers["Content-Location"]).json()
    patients = next(o for o in manifest["output"] if o["type"] == "patients")
    body = client.get(patients["url"])
    assert patients["url"].endswith(".parquet") and body.content[:4] == b"PAR1"
    assert body.headers["content-type"] == "application/vnd.apache.parquet"
    client.delete(kick.headers["Content-Location"])


def test_deleted_job_is_gone_with_its_files(client: httpx.Client, cohort_group: str, deid_key: str) -> None:
    status_url = client.get(f"/Group/{cohort_group}/$analysis-export", headers=ASYNC).headers["Content-Location"]
    manifest = wait_for(client, status_url).json()
    assert client.delete(status_url).status_code == 202
    assert client.get(status_url).status_code == 404
    assert client.get(manifest["output"][0]["url"]).status_code == 404


def test_without_deid_key_the_export_is_refused_with_503(database) -> None:
    settings = Settings(database_url=database.url, auth="off", deid_key=None)
    with serving(settings, Store(database.engine)) as (root, _):
        response = httpx.get(root + "/fhir/$analysis-export", headers=ASYNC, timeout=30)
    assert response.status_code == 503
    issue = response.json()["issue"][0]
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "FHIRFUS_DEID_KEY" in issue["diagnostics"] and issue["expression"] == ["FHIRFUS_DEID_KEY"]


@pytest.mark.parametrize(("params", "headers", "status", "expression"), [
    ({}, {}, 400, "Prefer"),
    ({"_outputFormat": "xlsx"}, ASYNC, 400, "_outputFormat"),
    ({"policy": "no-such-policy"}, ASYNC, 400, "policy"),
    ({"_type": "Patient"}, ASYNC, 400, "_type"),
])
def test_bad_kick_off_is_a_clear_4xx(client: httpx.Client, deid_key: str, params: dict, headers: dict, status: int,
                                     expression: str) -> None:
    response = client.get("/Group/_all/$analysis-export", params=params, headers=headers)
    assert response.status_code == status
    assert response.json()["issue"][0]["expression"] == [expression]


def test_unknown_group_is_404_and_a_non_cohort_group_is_422(client: httpx.Client, deid_key: str, unique: str) -> None:
    assert client.get(f"/Group/nope-{unique}/$analysis-export", headers=ASYNC).status_code == 404
    group = {"resourceType": "Group", "type": "device", "actual": True}
    created = client.post("/Group", json=group, headers={"Content-Type": "application/fhir+json"}).json()
    assert client.get(f"/Group/{created['id']}/$analysis-export", headers=ASYNC).status_code == 422


def test_unknown_job_is_404(client: httpx.Client) -> None:
    assert client.get("/_analysis/0123456789abcdef0123456789abcdef").status_code == 404
    assert client.get("/_analysis/..%2F..%2Fetc").status_code == 404


@pytest.fixture(scope="module")
def smart_clients(secure_server) -> dict:
    """An analyst, a second analyst and a site client registered on the authenticated server."""
    store = Store(secure_server.database.engine)
    token_url = secure_server.root + "/auth/token"
    return {
        "analyst": make_client(store, token_url, role="analyst", scope="system/*.rs"),
        "other": make_client(store, token_url, role="analyst", scope="system/*.rs"),
        "site": make_client(store, token_url, role="site", site=f"S{uuid.uuid4().hex[:6]}", scope="system/*.cruds"),
    }


def test_with_authentication_only_analysts_start_exports_and_only_their_own_jobs_answer(
    secure_server, smart_clients: dict, deid_key: str
) -> None:
    with smart_clients["site"].http(secure_server.base) as site:
        assert site.get("/$analysis-export", headers=ASYNC).status_code == 403
    with smart_clients["analyst"].http(secure_server.base) as analyst, \
            smart_clients["other"].http(secure_server.base) as other:
        kick = analyst.get("/$analysis-export", headers=ASYNC)
        assert kick.status_code == 202, kick.text
        status_url = kick.headers["Content-Location"]
        assert other.get(status_url).status_code == 404
        manifest = wait_for(analyst, status_url).json()
        assert manifest["requiresAccessToken"] is True
        assert other.get(manifest["output"][0]["url"]).status_code == 404
        assert analyst.get(manifest["output"][0]["url"]).status_code == 200
        analyst.delete(status_url)


def test_finished_jobs_older_than_the_expiry_are_swept_with_their_files(tmp_path: Path) -> None:
    jobs = AnalysisJobs(Store(make_engine(f"sqlite:///{tmp_path / 'unused.db'}")), tmp_path / "jobs", key=None,
                        expire_seconds=60)
    old, fresh = (JobState(uuid.uuid4().hex, "completed", "r", None, "csv", None, "", "") for _ in range(2))
    for job in (old, fresh):
        jobs._write(job)
        (tmp_path / "jobs" / job.id / "files").mkdir()
    stale = orjson.loads((tmp_path / "jobs" / old.id / "job.json").read_bytes())
    (tmp_path / "jobs" / old.id / "job.json").write_bytes(orjson.dumps({**stale, "updated": "2020-01-01T00:00:00.000Z"}))
    jobs.expire()
    assert not (tmp_path / "jobs" / old.id).exists() and (tmp_path / "jobs" / fresh.id / "files").is_dir()
    jobs.shutdown()


def test_the_jobs_data_snapshot_is_its_transaction_time(client: httpx.Client, finished: tuple[httpx.Response, dict]) -> None:
    _, manifest = finished
    url = next(o["url"] for o in manifest["output"] if o["type"] == "statistics")
    provenance = json.loads(client.get(url).text)["provenance"]
    moment = manifest["transactionTime"]
    assert provenance["snapshot"] == moment[:19] + "Z"  # to the second
    report = client.get(next(o["url"] for o in manifest["output"] if o["type"] == "report")).text
    assert f"Data snapshot: {provenance['snapshot']}" in report
