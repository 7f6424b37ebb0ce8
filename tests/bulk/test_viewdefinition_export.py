"""``$viewdefinition-export`` on both databases: kicked off (202 and a status URL), polled (202 with
``X-Progress``, then 200 with the operation's Parameters), its files downloaded by the requester
only, cancelled; confined as ``$viewdefinition-run`` is (site rows, an analyst's policy); and a job
survives its process (another worker adopts and runs it)."""

from __future__ import annotations

import csv
import io
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import TEST_DEID_KEY
from view_world import PSEUDONYM, guide, make_world

from fhirfus.analysis.viewpolicy import ViewDeidentification, deidentification
from fhirfus.auth.access import Access
from fhirfus.auth.scopes import Grant
from fhirfus.bulk import jobs, views
from fhirfus.bulk.worker import ExportWorker
from fhirfus.interactions.viewdefinition import ViewRun
from fhirfus.settings import Settings
from fhirfus.store.repository import Store

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def world(secure_server, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_world(secure_server, tmp_path_factory)


def view_part(name: str | None = None, **chosen: object) -> dict:
    parts = [{"name": "name", "valueString": name}] if name else []
    for key, value in chosen.items():
        parts.append({"name": key, "resource": value} if isinstance(value, dict) else {"name": key, "valueString": value})
    return {"name": "view", "part": parts}


def kick_off(http: httpx.Client, *parameters: dict, **options: str) -> httpx.Response:
    body = {"resourceType": "Parameters", "parameter": [
        *parameters, *({"name": k, "valueString": v} for k, v in options.items())]}
    return http.post("/ViewDefinition/$viewdefinition-export", json=body, headers=ASYNC)


def finished(http: httpx.Client, kick: httpx.Response, timeout: float = 60) -> dict:
    assert kick.status_code == 202, kick.text
    url = kick.headers["Content-Location"]
    deadline = time.monotonic() + timeout
    while (answer := http.get(url)).status_code == 202 and time.monotonic() < deadline:
        assert answer.headers["X-Progress"] and answer.headers["Retry-After"]
        time.sleep(0.1)
    assert answer.status_code == 200, answer.text
    return answer.json()


def outputs(result: dict) -> dict[str, str]:
    """name → download URL of every output of a completed export's Parameters."""
    found = {}
    for parameter in result["parameter"]:
        if parameter["name"] == "output":
            parts = {p["name"]: p for p in parameter["part"]}
            found[parts["name"]["valueString"]] = parts["location"]["valueUri"]
    return found


def value(result: dict, name: str) -> object:
    return next(next(v for k, v in p.items() if k.startswith("value")) for p in result["parameter"] if p["name"] == name)


def test_an_admin_export_of_two_views_is_polled_and_downloaded_by_its_requester_only(
        secure_server, world: dict) -> None:
    inline = {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
              "select": [{"column": [{"name": "id", "path": "id"}, {"name": "gender", "path": "gender"}]}]}
    clients = world["clients"]
    with clients["admin"].http(secure_server.base) as admin, clients["a"].http(secure_server.base) as on_a:
        kick = kick_off(admin, view_part(viewReference="analysis_patient"), view_part("genders", viewResource=inline),
                        _format="csv", clientTrackingId="trial-7")
        assert kick.json()["resourceType"] == "Parameters" and value(kick.json(), "status") == "accepted"
        result = finished(admin, kick)
        assert value(result, "status") == "completed" and value(result, "clientTrackingId") == "trial-7"
        assert value(result, "exportId") == kick.headers["Content-Location"].rsplit("/", 1)[1]
        files = outputs(result)
        assert sorted(files) == ["analysis_patient", "genders"]
        download = admin.get(files["analysis_patient"])
        assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(download.text)))
        assert {world["sites"]["a"], world["sites"]["b"]} <= {row["site"] for row in table}
        assert set(world["ids_a"]) <= {row["id"] for row in csv.DictReader(io.StringIO(admin.get(files["genders"]).text))}
        assert on_a.get(files["analysis_patient"]).status_code == 404  # another client: no such job
        assert on_a.get(kick.headers["Content-Location"]).status_code == 404


def test_a_site_clients_export_holds_its_sites_rows_only(secure_server, world: dict) -> None:
    with world["clients"]["a"].http(secure_server.base) as on_a:
        result = finished(on_a, kick_off(on_a, view_part(viewReference="analysis_patient")))
        rows = [orjson.loads(line) for line in on_a.get(outputs(result)["analysis_patient"]).content.splitlines()]
    assert sorted(row["patient_key"] for row in rows) == world["ids_a"]


def test_an_analysts_export_goes_through_the_policy(secure_server, world: dict) -> None:
    with world["clients"]["analyst"].http(secure_server.base) as analyst, \
            world["clients"]["other"].http(secure_server.base) as other:
        result = finished(analyst, kick_off(analyst, view_part(viewReference="analysis_procedure"),
                                            view_part(viewReference="analysis_patient"), group=world["group"]))
        files = outputs(result)
        assert value(result, "policy") == "safe-harbor" and len(str(value(result, "policySha256"))) == 64
        sessions = [orjson.loads(line) for line in analyst.get(files["analysis_procedure"]).content.splitlines()]
        assert other.get(files["analysis_procedure"]).status_code == 404
    assert sessions and all(PSEUDONYM.match(row["patient_key"]) and isinstance(row["performed"], int)
                            for row in sessions)
    assert not any(raw in orjson.dumps(sessions).decode() for raw in world["ids_a"])


def test_an_analysts_export_of_a_view_without_rules_is_refused_at_kick_off(secure_server, world: dict) -> None:
    reads_name = guide("analysis_patient")
    reads_name["select"][0]["column"].append({"name": "family", "path": "name.family.first()", "type": "string"})
    with world["clients"]["analyst"].http(secure_server.base) as analyst:
        answer = kick_off(analyst, view_part(viewResource=reads_name))
    assert answer.status_code == 422, answer.text
    assert answer.json()["issue"][0]["expression"] == ["family"]


def test_a_cancelled_export_is_gone_with_its_files(secure_server, world: dict) -> None:
    with world["clients"]["admin"].http(secure_server.base) as admin:
        kick = kick_off(admin, view_part(viewReference="analysis_patient"))
        files = outputs(finished(admin, kick))
        assert admin.delete(kick.headers["Content-Location"]).status_code == 202
        assert admin.get(kick.headers["Content-Location"]).status_code == 404
        assert admin.get(files["analysis_patient"]).status_code == 404


@pytest.mark.parametrize(("parameters", "headers", "element"), [
    ([view_part(viewReference="analysis_patient")], {}, "Prefer"),
    ([], ASYNC, "view"),
    ([view_part(viewReference="no_such_view")], ASYNC, "viewReference"),
    ([view_part(viewReference="analysis_patient"), view_part(viewReference="analysis_patient")], ASYNC,
     "view[1].name"),
    ([view_part("bad name", viewReference="analysis_patient")], ASYNC, "view[0].name"),
    ([view_part(viewReference="analysis_patient"), {"name": "_format", "valueString": "xml"}], ASYNC, "_format"),
    ([view_part(viewReference="analysis_patient"), {"name": "source", "valueString": "s3://x"}], ASYNC, "source"),
    ([view_part(viewReference="analysis_patient", viewTitle="x")], ASYNC, "view[0].viewTitle"),
])
def test_a_bad_kick_off_is_a_4xx_naming_the_parameter(secure_server, world: dict, parameters: list, headers: dict,
                                                     element: str) -> None:
    with world["clients"]["admin"].http(secure_server.base) as admin:
        answer = admin.post("/$viewdefinition-export", json={"resourceType": "Parameters", "parameter": parameters},
                            headers=headers)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["issue"][0]["expression"] == [element]


def test_a_job_whose_process_died_is_run_by_another_worker(secure_server, world: dict, tmp_path: Path) -> None:
    """The job row is all there is: a worker that finds it orphaned runs it from scratch."""
    store: Store = world["store"]
    settings = Settings(database_url=secure_server.database.url, export_dir=str(tmp_path), deid_key=TEST_DEID_KEY)

    def shaper(run: ViewRun, policy: str | None) -> ViewDeidentification:
        return deidentification(store, TEST_DEID_KEY, run, policy)

    analyst = Access("analyst-of-a-dead-process", "analyst", None, (Grant("*", "rs"),))
    request = views.checked_request(store, analyst, [], {"viewReference": "analysis_patient", "group": [world["group"]]},
                                    base_url="http://127.0.0.1/fhir", shaper=shaper)
    job = jobs.create(store, uuid.uuid4().hex, request, "http://127.0.0.1/fhir/$viewdefinition-export",
                      owner="a-process-that-died")
    heir = ExportWorker(store, settings, lease=timedelta(0), runners={views.LEVEL: views.runner(shaper)})
    try:
        heir.tend()
        deadline = time.monotonic() + 60
        while (current := jobs.get(store, job.id)) is not None and current.status in jobs.ACTIVE \
                and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        heir.stop()
    assert current is not None and current.status == jobs.COMPLETED, current
    [written] = jobs.files_of(store, job.id)
    rows = [orjson.loads(line) for line in (Path(current.directory or "") / written.name).read_bytes().splitlines()]
    assert len(rows) == 3 and all(PSEUDONYM.match(row["patient_key"]) for row in rows)
