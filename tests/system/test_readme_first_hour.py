"""The README's "Your first hour" paths run as written: every ```sh first-hour block, in order,
from the repository root with bash (``set -e``), against its own throw-away database file."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "site-registry"
BLOCKS = re.findall(r"```sh first-hour\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)


def test_the_readme_has_the_four_paths() -> None:
    assert len(BLOCKS) == 3  # coordinator, analyst, integrator (the operator's needs Docker)
    assert "docker compose up" in (REPO / "README.md").read_text(encoding="utf-8")
    compose = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    assert all(name in compose for name in ("FHIRFUS_DATABASE_URL", "FHIRFUS_DEID_KEY", "FHIRFUS_TOKEN_SECRET"))


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared site files are absent ({SHARED})")
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_first_hour_paths_run_as_written() -> None:
    database, analysis = REPO / "var" / "first-hour.db", REPO / "var" / "first-hour-analysis"
    reports = [REPO / "var" / "site-b-rejected.csv", REPO / "var" / "site-a-rejected.csv",
               REPO / "var" / "first-hour-demo.db"]
    for path in (database, *reports):
        path.unlink(missing_ok=True)
    shutil.rmtree(analysis, ignore_errors=True)
    (REPO / "var").mkdir(exist_ok=True)
    try:
        for block in BLOCKS:
            done = subprocess.run(["bash", "-e", "-c", block], cwd=REPO, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{block}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
            if "--dry-run" in block:
                assert "rejected" in done.stdout.lower()
            if "export analysis" in block:
                assert "patients.csv" in done.stdout
            if "serve" in block:
                assert '"resourceType":"Bundle"' in done.stdout and '"gender":"female"' in done.stdout
                assert "vo-complex" in done.stdout
        assert not list(REPO.glob("*.import-report.csv"))  # nothing written outside var/
    finally:
        for path in (*reports, *(REPO / "var").glob("first-hour.db*")):
            path.unlink(missing_ok=True)
        shutil.rmtree(analysis, ignore_errors=True)
