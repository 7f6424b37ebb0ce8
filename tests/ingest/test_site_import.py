"""Site imports through the declarative mappings, on both databases, checked over HTTP.

Expected counts are computed here from the CSV itself (rows per visit type), not hard-coded.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

REGISTRY = Path(__file__).resolve().parents[3] / "shared" / "data" / "site-registry"
SITE_A = REGISTRY / "example-site-a.csv"
SITE_B = REGISTRY / "example-site-b-with-errors.csv"
needs_registry = pytest.mark.skipif(not SITE_A.is_file(), reason=f"shared site registry files not found at {REGISTRY}")
TWSTRS = "https://fhirfus.org/fhir/CodeSystem/twstrs"


def run_import(database_url: str, site: str, *files: Path, report: Path | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "fhirfus.cli", "import", "--mapping", "site-registry", "--site", site, *map(str, files)]
    if report:
        args += ["--report", str(report)]
    env = {**os.environ, "FHIRFUS_DATABASE_URL": database_url, "COLUMNS": "200"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def total(client: httpx.Client, path: str, **params: str) -> int:
    return client.get(path, params={**params, "_summary": "count"}).json()["total"]


def site_patients(site: str) -> str:
    return f"https://fhirfus.org/fhir/sid/site-patient/{site}|"


def expected(path: Path) -> dict[str, int]:
    rows = list(csv.DictReader(path.open(encoding="utf-8-sig")))
    assessments = sum(r["visit_type"] in ("baseline", "follow-up") for r in rows)
    return {
        "patients": len({r["site_patient_id"] for r in rows}),
        "sessions": sum(r["visit_type"] == "session" for r in rows),
        "responses": assessments,
        "scores": 4 * assessments,  # every assessment of the clean file is complete: 4 scores each
    }


@needs_registry
def test_clean_site_file_imports_every_patient_and_record(client: httpx.Client, server, unique: str) -> None:
    site = f"A{unique}"
    result = run_import(server.database.url, site, SITE_A)
    assert result.returncode == 0, result.stdout + result.stderr
    want = expected(SITE_A)
    patients = client.get("/Patient", params={"identifier": site_patients(site), "_count": 100}).json()
    assert patients["total"] == want["patients"]
    ids = ",".join(e["resource"]["id"] for e in patients["entry"])
    assert total(client, "/Procedure", subject=ids) == want["sessions"]
    assert total(client, "/QuestionnaireResponse", subject=ids) == want["responses"]
    assert total(client, "/Observation", subject=ids, code=f"{TWSTRS}|total,{TWSTRS}|severity,{TWSTRS}|disability,{TWSTRS}|pain") == want["scores"]


@needs_registry
def test_second_import_changes_nothing(client: httpx.Client, server, unique: str) -> None:
    site = f"A{unique}"
    run_import(server.database.url, site, SITE_A)
    before = server.database.counts()
    again = run_import(server.database.url, site, SITE_A)
    assert again.returncode == 0
    assert "0 created, 0 updated" in " ".join(again.stdout.split() + again.stderr.split())
    assert server.database.counts() == before


@needs_registry
def test_edited_row_updates_its_resource(client: httpx.Client, server, tmp_path: Path, unique: str) -> None:
    site = f"A{unique}"
    run_import(server.database.url, site, SITE_A)
    rows = list(csv.DictReader(SITE_A.open(encoding="utf-8-sig")))
    first = next(i for i, r in enumerate(rows) if r["visit_type"] == "baseline")
    rows[first]["twstrs_disability_work"] = str((int(rows[first]["twstrs_disability_work"]) + 1) % 6)
    edited = tmp_path / "edited.csv"
    with edited.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = run_import(server.database.url, site, edited)
    assert result.returncode == 0
    text = " ".join(result.stdout.split() + result.stderr.split())
    assert "0 created, 1 updated" in text
    patient = client.get("/Patient", params={"identifier": site_patients(site) + rows[first]["site_patient_id"]}).json()
    responses = client.get("/QuestionnaireResponse", params={
        "subject": f"Patient/{patient['entry'][0]['resource']['id']}", "authored": rows[first]["visit_date"]}).json()
    response = responses["entry"][0]["resource"]
    assert response["meta"]["versionId"] == "2"
    answers = {i["linkId"]: i["answer"][0]["valueInteger"] for i in response["item"]}
    assert answers["disability.work"] == int(rows[first]["twstrs_disability_work"])
    scores = client.get("/Observation", params={"derived-from": f"QuestionnaireResponse/{response['id']}",
                                                "code": f"{TWSTRS}|disability"}).json()
    disability = sum(answers[k] for k in answers if k.startswith("disability."))
    assert scores["entry"][0]["resource"]["valueQuantity"]["value"] == disability


@needs_registry
def test_bad_rows_are_reported_precisely_and_their_patients_left_out(
    client: httpx.Client, server, tmp_path: Path, unique: str
) -> None:
    site = f"B{unique}"
    report = tmp_path / "report.csv"
    result = run_import(server.database.url, site, SITE_B, report=report)
    assert result.returncode == 1
    errors = list(csv.DictReader(report.open()))
    assert [(e["line"], e["column"]) for e in errors] == [
        ("3", "twstrs_severity_rotation"), ("6", "visit_date"), ("8", "target"),
        ("11", "site_patient_id"), ("14", "twstrs_pain_usual"),
    ]
    assert all(e["reason"] for e in errors)
    rows = list(csv.DictReader(SITE_B.open(encoding="utf-8-sig")))
    bad = {rows[int(e["line"]) - 2]["site_patient_id"] for e in errors} - {""}
    good = {r["site_patient_id"] for r in rows} - bad - {""}
    loaded = client.get("/Patient", params={"identifier": site_patients(site), "_count": 100}).json()
    values = {i["value"] for e in loaded.get("entry", []) for i in e["resource"]["identifier"]
              if i["system"].endswith(f"/site-patient/{site}")}
    assert values == good


@needs_registry
def test_import_is_recorded_by_a_provenance(client: httpx.Client, server, unique: str) -> None:
    site = f"A{unique}"
    run_import(server.database.url, site, SITE_A)
    patients = client.get("/Patient", params={"identifier": site_patients(site), "_count": 100}).json()
    some = patients["entry"][0]["resource"]["id"]
    provenance = client.get("/Provenance", params={"target": f"Patient/{some}"}).json()
    assert provenance["total"] == 1
    record = provenance["entry"][0]["resource"]
    assert len(record["target"]) == patients["total"]
    assert record["entity"][0]["what"]["identifier"]["value"]  # the file hash
    assert record["policy"] == ["https://fhirfus.org/fhir/mapping/site-registry"]


@needs_registry
def test_imported_resources_carry_the_site_label(client: httpx.Client, server, unique: str) -> None:
    site = f"A{unique}"
    run_import(server.database.url, site, SITE_A)
    labelled = total(client, "/Patient", _security=f"https://fhirfus.org/fhir/CodeSystem/site|{site}")
    assert labelled == expected(SITE_A)["patients"]


def test_unknown_mapping_is_a_clear_error(server, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    env = {**os.environ, "FHIRFUS_DATABASE_URL": server.database.url}
    result = subprocess.run([sys.executable, "-m", "fhirfus.cli", "import", "--mapping", "nope", "--site", "X", str(path)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Unknown mapping 'nope'" in result.stdout + result.stderr


def test_file_missing_mapped_columns_is_refused(server, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("site_patient_id,sex\nX1,F\n")
    result = run_import(server.database.url, "X", path)
    assert result.returncode == 2
    assert "columns missing" in result.stdout + result.stderr


@needs_registry
@pytest.mark.parametrize(("name", "options"), [("example-site-c.xlsx", ()), ("example-site-d-de.csv", ("--locale", "de"))])
def test_files_as_sites_keep_them_load_every_patient(client: httpx.Client, server, unique: str, name: str, options: tuple) -> None:
    from fhirfus.ingest.files import read_table

    site = f"X{unique}"
    args = [sys.executable, "-m", "fhirfus.cli", "import", "--mapping", "site-registry", "--site", site,
            str(REGISTRY / name), *options]
    env = {**os.environ, "FHIRFUS_DATABASE_URL": server.database.url}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = read_table(REGISTRY / name).rows
    assert total(client, "/Patient", identifier=site_patients(site)) == len({r["site_patient_id"] for r in rows})
    sessions = sum(r["visit_type"] == "session" for r in rows)
    patients = client.get("/Patient", params={"identifier": site_patients(site), "_count": 100}).json()
    ids = ",".join(e["resource"]["id"] for e in patients["entry"])
    assert total(client, "/Procedure", subject=ids) == sessions


@needs_registry
def test_the_german_file_is_recognised_without_its_locale(client: httpx.Client, server, unique: str) -> None:
    from fhirfus.ingest.files import read_table

    site = f"Y{unique}"
    args = [sys.executable, "-m", "fhirfus.cli", "import", "--mapping", "site-registry", "--site", site,
            str(REGISTRY / "example-site-d-de.csv")]
    env = {**os.environ, "FHIRFUS_DATABASE_URL": server.database.url}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "reading dates and numbers as locale de (recognised in the file" in result.stderr
    rows = read_table(REGISTRY / "example-site-d-de.csv").rows
    assert total(client, "/Patient", identifier=site_patients(site)) == len({r["site_patient_id"] for r in rows})
