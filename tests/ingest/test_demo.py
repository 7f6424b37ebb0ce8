"""``fhirfus demo`` builds the synthetic cohort through the real import path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from fhirfus.domain.demo_cohort import SITES, cohort


def test_demo_cohort_is_deterministic() -> None:
    assert cohort() == cohort()


def test_demo_cohort_has_three_sites_one_shaped_like_the_study() -> None:
    rows = cohort()
    assert sorted(rows) == ["A", "B", "C"]
    assert len({r["site_patient_id"] for r in rows["A"]}) == 13
    assert sum(shape.patients for shape in SITES) == 60


def test_demo_command_imports_the_cohort_and_its_group(client: httpx.Client, server, tmp_path: Path) -> None:
    env = {**os.environ, "FHIRFUS_DATABASE_URL": server.database.url}
    result = subprocess.run([sys.executable, "-m", "fhirfus.cli", "demo", "--dir", str(tmp_path)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    group = client.get("/Group/demo-cohort").json()
    assert group["quantity"] == 60 and len(group["member"]) == 60
    site_a = client.get("/Patient", params={"identifier": "https://fhirfus.org/fhir/sid/site-patient/A|",
                                            "_summary": "count"}).json()
    assert site_a["total"] == 13
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-site-A.csv", "demo-site-B.csv", "demo-site-C.csv"]
