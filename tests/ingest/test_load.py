"""``fhirfus load``: NDJSON and Bundle files, resumable after a kill, checked over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from fhirfus.db.tables import load_journal

FHIRFUS = [sys.executable, "-m", "fhirfus.cli"]


def _write_ndjson(path: Path, resources: list[dict]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in resources) + b"\n")
    return path


def _dataset(folder: Path, unique: str, patients: int) -> list[Path]:
    org = {"resourceType": "Organization", "id": f"org-{unique}", "identifier": [{"system": f"urn:org:{unique}", "value": "1"}]}
    people = [
        {"resourceType": "Patient", "id": f"pat-{unique}-{n}", "identifier": [{"system": f"urn:load:{unique}", "value": str(n)}],
         "managingOrganization": {"reference": f"Organization?identifier=urn:org:{unique}|1"}}
        for n in range(patients)
    ]
    observations = [
        {"resourceType": "Observation", "id": f"obs-{unique}-{n}", "status": "final", "code": {"text": "x"},
         "subject": {"reference": f"Patient/pat-{unique}-{n}"}}
        for n in range(patients)
    ]
    # deliberately passed in the "wrong" order: the loader sorts by dependency
    return [
        _write_ndjson(folder / "Observation.000.ndjson", observations),
        _write_ndjson(folder / "Patient.000.ndjson", people),
        _write_ndjson(folder / "Organization.000.ndjson", [org]),
    ]


def _run(database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FHIRFUS_DATABASE_URL": database_url}
    return subprocess.run([*FHIRFUS, "load", *args], env=env, capture_output=True, text=True, timeout=300)


def _total(client: httpx.Client, query: str) -> int:
    return client.get(f"{query}&_summary=count").json()["total"]


def test_load_ndjson_resolves_conditional_references(client: httpx.Client, server, tmp_path: Path, unique: str) -> None:
    files = _dataset(tmp_path, unique, 20)
    result = _run(server.database.url, *map(str, files))
    assert result.returncode == 0, result.stderr
    assert _total(client, f"/Patient?identifier=urn:load:{unique}|") == 20
    patient = client.get(f"/Patient/pat-{unique}-3").json()
    assert patient["managingOrganization"]["reference"] == f"Organization/org-{unique}"
    assert _total(client, f"/Observation?subject:Patient.identifier=urn:load:{unique}|") == 20


def test_rerun_skips_what_is_stored(client: httpx.Client, server, tmp_path: Path, unique: str) -> None:
    files = _dataset(tmp_path, unique, 10)
    _run(server.database.url, *map(str, files))
    again = _run(server.database.url, *map(str, files))
    assert again.returncode == 0
    assert "loaded 0 resources" in again.stderr + again.stdout
    assert client.get(f"/Patient/pat-{unique}-1").json()["meta"]["versionId"] == "1"


def test_bundle_file_loads_as_one_transaction(client: httpx.Client, server, tmp_path: Path, unique: str) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0f0f0f0f-0000-0000-0000-000000000001",
         "resource": {"resourceType": "Patient", "identifier": [{"system": f"urn:bundle-load:{unique}", "value": "1"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "urn:uuid:0f0f0f0f-0000-0000-0000-000000000001"}},
         "request": {"method": "POST", "url": "Observation"}},
    ]}
    path = tmp_path / "bundle.json"
    path.write_bytes(orjson.dumps(bundle))
    assert _run(server.database.url, str(path)).returncode == 0
    assert _total(client, f"/Observation?subject:Patient.identifier=urn:bundle-load:{unique}|1") == 1


def test_invalid_resource_fails_with_exit_code_and_message(server, tmp_path: Path, unique: str) -> None:
    path = _write_ndjson(tmp_path / "Patient.ndjson", [{"resourceType": "Patient", "id": f"bad-{unique}", "gender": "banana"}])
    result = _run(server.database.url, str(path))
    assert result.returncode == 1
    assert "Patient.gender" in result.stderr + result.stdout


def test_killed_load_then_rerun_ends_with_exactly_the_expected_resources(
    client: httpx.Client, server, tmp_path: Path, unique: str
) -> None:
    patients = 3000
    files = _dataset(tmp_path, unique, patients)
    env = {**os.environ, "FHIRFUS_DATABASE_URL": server.database.url}
    process = subprocess.Popen([*FHIRFUS, "load", "--chunk-size", "50", *map(str, files)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine = server.database.engine
    deadline = time.monotonic() + 120
    try:
        while True:
            with engine.connect() as conn:
                chunks = conn.execute(select(func.count()).select_from(load_journal)).scalar_one()
            if chunks >= 5 or process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    partial = _total(client, f"/Patient?identifier=urn:load:{unique}|")
    if partial == patients:
        pytest.fail("the load finished before it could be interrupted; make the data set larger")
    result = _run(server.database.url, "--chunk-size", "50", *map(str, files))
    assert result.returncode == 0, result.stderr
    assert _total(client, f"/Patient?identifier=urn:load:{unique}|") == patients
    assert _total(client, f"/Observation?subject:Patient.identifier=urn:load:{unique}|") == patients
    versions = {
        e["resource"]["meta"]["versionId"]
        for e in client.get(f"/Patient?identifier=urn:load:{unique}|&_count=1000&_elements=id").json()["entry"]
    }
    assert versions == {"1"}
