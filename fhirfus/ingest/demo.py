"""``fhirfus demo``: write the synthetic cohort as site files and import them like any site would.

Afterwards a ``Group`` (the cohort, all demo patients) and a ``ResearchStudy`` exist, so the
analysis export has something to work on.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select

from fhirfus.auth.access import SERVER
from fhirfus.db.visibility import EVERYTHING
from fhirfus.domain.demo_cohort import HEADER, cohort, twstrs_columns
from fhirfus.ingest.plan import DEMO_GROUP_ID
from fhirfus.ingest.site_import import ImportReport, import_files
from fhirfus.interactions import crud, search
from fhirfus.store.repository import Store

GROUP_ID = DEMO_GROUP_ID
STUDY_ID = "demo-study"


def write_site_files(directory: Path) -> list[tuple[str, Path]]:
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    columns = HEADER + twstrs_columns()
    for site, rows in cohort().items():
        path = directory / f"demo-site-{site}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        files.append((site, path))
    return files


def is_empty(store: Store) -> bool:
    with store.reading() as conn:
        return conn.execute(select(func.count()).select_from(EVERYTHING.resources())).scalar_one() == 0


def load_demo(store: Store, directory: Path, progress: Callable[[int], None] | None = None) -> list[ImportReport]:
    reports = [import_files(store, "site-registry", site, [path], progress=progress, allow_demo=True)
               for site, path in write_site_files(directory)]
    _cohort_resources(store)
    return reports


def _cohort_resources(store: Store) -> None:
    """The study and the cohort Group over every patient the demo sites imported."""
    members = []
    for site in ("A", "B", "C"):
        bundle = search.search_bundle(
            store, SERVER, "", "Patient", [("identifier", f"https://fhirfus.org/fhir/sid/site-patient/{site}|"), ("_count", "1000")],
            default_count=1000, max_count=1000,
        )
        members += [{"entity": {"reference": f"Patient/{e['resource']['id']}"}} for e in bundle.get("entry", [])]
    study = {"resourceType": "ResearchStudy", "id": STUDY_ID, "status": "completed",
             "title": "Synthetic multicentre MRgFUS cohort in cervical dystonia (demo data)"}
    group = {"resourceType": "Group", "id": GROUP_ID, "type": "person", "actual": True,
             "name": "Demo cohort (3 sites)", "quantity": len(members), "member": members}
    crud.update(store, SERVER, "ResearchStudy", STUDY_ID, study)
    crud.update(store, SERVER, "Group", GROUP_ID, group)
