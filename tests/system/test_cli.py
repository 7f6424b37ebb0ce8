"""The ``fhirfus`` command as a data manager meets it: it says which database it uses, never creates
one by accident, fails in one line, shows whole tables in logs, skips what is not FHIR; the server
logs one line per request without patient data."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REGISTRY = Path(__file__).resolve().parents[3] / "shared" / "data" / "site-registry"
SITE_A = REGISTRY / "example-site-a.csv"
SITE_B = REGISTRY / "example-site-b-with-errors.csv"
SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea-r4-transaction-bundles"
needs_registry = pytest.mark.skipif(not SITE_A.is_file(), reason=f"shared site registry files not found at {REGISTRY}")


def fhirfus(database_url: str, *args: str, cwd: Path | None = None, columns: str = "60") -> subprocess.CompletedProcess:
    env = {**os.environ, "FHIRFUS_DATABASE_URL": database_url, "COLUMNS": columns}
    return subprocess.run([sys.executable, "-m", "fhirfus.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def import_args(site: str, *files: Path, mapping: str = "site-registry") -> list[str]:
    return ["import", "--mapping", mapping, "--site", site, *map(str, files)]


@needs_registry
def test_a_data_command_says_which_database_it_writes_to(server, unique: str) -> None:
    result = fhirfus(server.database.url, *import_args(f"A{unique}", SITE_A))
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    if server.database.backend == "sqlite":
        assert first == f"database: SQLite file {Path(server.database.url.removeprefix('sqlite:///')).resolve()}"
    else:
        assert first.startswith("database: postgresql")


@needs_registry
def test_no_new_database_is_created_by_accident(tmp_path: Path) -> None:
    relative = "sqlite:///./var/fhirfus.db"
    refused = fhirfus(relative, *import_args("A", SITE_A), cwd=tmp_path)
    assert refused.returncode == 2
    assert f"no database at {tmp_path / 'var' / 'fhirfus.db'} (relative to the current folder {tmp_path})" in refused.stderr
    assert not (tmp_path / "var").exists()
    created = fhirfus(relative, *import_args("A", SITE_A), "--create", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "var" / "fhirfus.db").is_file()


@pytest.mark.parametrize(("url", "reason"), [
    ("not a url", "FHIRFUS_DATABASE_URL is not a database URL ('not a url')"),
    ("postgresql+psycopg://nobody@127.0.0.1:1/nothing", "cannot open the database postgresql+psycopg://nobody@127.0.0.1:1/nothing: "),
    ("mysql://nobody@127.0.0.1/x", "cannot open the database"),
])
def test_a_wrong_database_url_is_one_line(url: str, reason: str) -> None:
    result = fhirfus(url, "reindex")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    failure = [line for line in result.stderr.splitlines() if not line.startswith("database: ")]
    assert len(failure) == 1 and failure[0].startswith(reason), result.stderr


@needs_registry
def test_rejected_rows_are_whole_lines_when_output_is_not_a_terminal(server, tmp_path: Path, unique: str) -> None:
    result = fhirfus(server.database.url, *import_args(f"B{unique}", SITE_B), "--report", str(tmp_path / "r.csv"),
                     columns="40")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert "line\tpatient\tcolumn\tvalue\treason" in lines
    assert ("8\tB002\ttarget\tSTN?\tunknown value 'STN?'; expected one of PTT (pallidothalamic-tract), "
            "Vo (vo-complex); several joined by '+', e.g. PTT+Vo") in lines
    assert any(line.startswith("patient B001: rows 3, 6 rejected, so the valid rows (2, 4, 5) are held back") for line in lines)


@needs_registry
def test_a_dry_run_shows_the_changes_and_writes_nothing(server, tmp_path: Path, unique: str) -> None:
    before = server.database.counts()
    changes = tmp_path / "changes.csv"
    result = fhirfus(server.database.url, *import_args(f"C{unique}", SITE_A), "--dry-run", "--changes", str(changes))
    assert result.returncode == 0, result.stderr
    assert "dry run: nothing written" in result.stderr
    assert "added\t" in result.stderr  # the change list
    assert server.database.counts() == before
    listed = list(csv.DictReader(changes.open(encoding="utf-8")))
    patients = {r["site_patient_id"] for r in csv.DictReader(SITE_A.open(encoding="utf-8"))}
    assert {r["patient"] for r in listed if r["type"] == "Patient" and r["action"] == "added"} == patients


@needs_registry
def test_a_corrected_visit_date_is_listed_with_its_old_and_new_value(server, tmp_path: Path, unique: str) -> None:
    site = f"D{unique}"
    assert fhirfus(server.database.url, *import_args(site, SITE_A)).returncode == 0
    lines = SITE_A.read_text(encoding="utf-8").splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if ",follow-up," in line)
    old_date = lines[index].split(",")[4]
    new_date = old_date[:8] + ("27" if old_date[8:] != "27" else "26")
    lines[index] = lines[index].replace(old_date, new_date)
    corrected = tmp_path / "corrected.csv"
    corrected.write_text("".join(lines), encoding="utf-8")
    changes = tmp_path / "changes.csv"
    result = fhirfus(server.database.url, *import_args(site, corrected), "--dry-run", "--changes", str(changes))
    assert result.returncode == 0, result.stderr
    patient = lines[index].split(",")[0]
    listed = [line.split("\t") for line in result.stderr.splitlines() if line.startswith(f"{patient}\tchanged\t")]
    assert [row[2] for row in listed] == ["twstrs/follow-up/1"]
    assert f"authored: {old_date} → {new_date}" in listed[0][-1]
    [row] = [r for r in csv.DictReader(changes.open(encoding="utf-8")) if r["action"] == "changed"]
    assert row["patient"] == patient and f"authored: {old_date} → {new_date}" in row["change"]


@needs_registry
@pytest.mark.parametrize(("content", "reason"), [
    (b"", "the file is empty"),
    (b"\x00\x01binary", "not a text file"),
    (b"just,a,header\r\n1,2,3\r\n", "columns missing for mapping 'site-registry'"),
])
def test_an_unusable_file_is_one_message_never_a_traceback(server, tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(content)
    result = fhirfus(server.database.url, *import_args("Z", path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    failure = [line for line in result.stderr.splitlines() if not line.startswith("database: ")]
    assert len(failure) == 1 and failure[0].startswith(f"import failed: site.csv: {reason}"), result.stderr


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="Synthea bundles not found")
def test_load_of_a_synthea_folder_skips_its_manifest(server, tmp_path: Path) -> None:
    folder = tmp_path / "synthea"
    folder.mkdir()
    bundle = sorted(p for p in SYNTHEA.glob("*.json") if p.name != "MANIFEST.json")[0]
    for source in (bundle, SYNTHEA / "MANIFEST.json", SYNTHEA / "LICENSE"):
        shutil.copy(source, folder / source.name)
    result = fhirfus(server.database.url, "load", str(folder))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stderr.split())
    assert f"skipped {folder / 'MANIFEST.json'}: JSON but not a FHIR resource or Bundle" in text
    assert f"skipped {folder / 'LICENSE'}: not a .json or .ndjson file" in text
    assert "loaded " in text


def test_every_request_is_one_log_line_without_patient_data(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fhirfus.requests")
    client.get("/Patient/secret-id-123", params={"name": "Müller"})
    client.get("/Patient", params={"family": "Schmidt-secret"})
    deadline = time.monotonic() + 5
    while len(caplog.records) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "fhirfus.requests"]
    assert any(line.startswith("GET /fhir/{res_type}/{res_id} 404 ") for line in lines), lines
    assert any(line.startswith("GET /fhir/{res_type} 200 ") for line in lines), lines
    assert not any(secret in line for line in lines for secret in ("secret", "Müller", "Schmidt"))


def _serve(database_url: str, log: Path, *options: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``fhirfus serve`` in its own process, answering: (the process, its /fhir base)."""
    from fhirfus.testing import free_port

    port = free_port()
    environment = {**(env if env is not None else os.environ), "FHIRFUS_DATABASE_URL": database_url,
                   "FHIRFUS_AUTH": "off"}
    process = subprocess.Popen([sys.executable, "-m", "fhirfus.cli", "serve", "--port", str(port), "--no-migrate",
                                *options], env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/fhir"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/metadata").status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError(f"fhirfus serve did not answer: {log.read_text()[-2000:]}")


def _stopped(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def test_fhirfus_serve_writes_the_request_log(server, tmp_path: Path) -> None:
    if server.database.backend != "sqlite":
        pytest.skip("one backend is enough for the log wiring")
    process, base = _serve(server.database.url, tmp_path / "serve.log")
    try:
        httpx.get(f"{base}/Observation", params={"code": "secret-code"})
        time.sleep(0.5)
    finally:
        _stopped(process)
    text = (tmp_path / "serve.log").read_text()
    assert "GET /fhir/metadata 200 " in text
    assert "GET /fhir/{res_type} 200 " in text
    assert "secret-code" not in text


def _spawned_workers(pid: int) -> list[int]:
    """The worker processes uvicorn's supervisor ``pid`` spawned (not multiprocessing's helpers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes() and b"resource_tracker" not in
            Path(f"/proc/{c}/cmdline").read_bytes()]


def _wait_for_workers(pid: int, count: int) -> list[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(workers := _spawned_workers(pid)) < count:
        time.sleep(0.3)
    return workers


def test_fhirfus_serve_uses_every_core_by_default(server, tmp_path: Path) -> None:
    """No flag, no setting: one worker process per core, all answering (they share the database)."""
    if server.database.backend != "sqlite":
        pytest.skip("one backend is enough for the process count")
    if not Path("/proc/self/task").exists():
        pytest.skip("needs /proc to count processes")
    cores = os.cpu_count() or 1
    env = {k: v for k, v in os.environ.items() if k != "FHIRFUS_WORKERS"}
    process, base = _serve(server.database.url, tmp_path / "serve.log", env=env)
    try:
        workers = _wait_for_workers(process.pid, cores if cores > 1 else 0)
        answers = []
        for _ in range(20):
            with httpx.Client() as fresh:  # a new connection each: the kernel spreads them over the workers
                answers.append(fresh.get(f"{base}/metadata").status_code)
    finally:
        _stopped(process)
    assert answers == [200] * 20
    assert len(workers) == (cores if cores > 1 else 0), (tmp_path / "serve.log").read_text()
    assert f"({cores} worker process" in (tmp_path / "serve.log").read_text()


def test_the_workers_of_fhirfus_serve_die_with_it(server, tmp_path: Path) -> None:
    """``kill -9`` of the supervisor leaves no worker serving the port (or running jobs) on its own."""
    if server.database.backend != "sqlite":
        pytest.skip("one backend is enough for process handling")
    if not Path("/proc/self/task").exists():
        pytest.skip("needs /proc to see processes")
    process, base = _serve(server.database.url, tmp_path / "serve.log", "--workers", "2")
    try:
        workers = _wait_for_workers(process.pid, 2)
        assert len(workers) == 2
    finally:
        process.kill()
        process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.2)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()
             and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]]
    assert not alive, "workers outlived their supervisor"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/metadata", timeout=2)
