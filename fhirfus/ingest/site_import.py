"""``fhirfus import``: site files through a mapping spec into the store, as a plan committed at once.

The plan (``ingest/plan.py``) says what the files change against what the site has stored; bad
rows are reported by line, column, value and reason (and written to a CSV report); every patient
with a bad row is left out entirely (its valid rows are held back, and said so). The rest is
written in one transaction with a Provenance (file hash, mapping, site, mode). Resources keep
stable identities, so a re-import of the same file changes nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fhirfus.errors import Conflict, FhirError
from fhirfus.ingest.mapping.engine import RECORD_SYSTEM, RowError
from fhirfus.ingest.plan import ImportPlan, commit_plan, plan_import
from fhirfus.store.repository import Store


@dataclass
class ImportReport:
    files: list[str] = field(default_factory=list)
    rows: int = 0
    patients_loaded: int = 0
    patients_rejected: int = 0
    resources_created: int = 0
    resources_updated: int = 0
    resources_deleted: int = 0
    resources_unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    provenance: str | None = None
    plan: ImportPlan | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def report_of(plan: ImportPlan, provenance: str | None = None) -> ImportReport:
    return ImportReport(
        files=[t.name for t in plan.tables], rows=plan.rows, patients_loaded=len(plan.result.bundles),
        patients_rejected=len(plan.result.rejected_patients), resources_created=plan.count("added"),
        resources_updated=plan.count("changed"), resources_deleted=plan.count("removed"),
        resources_unchanged=plan.unchanged, errors=plan.errors, provenance=provenance, plan=plan,
    )


def import_files(
    store: Store, mapping: str, site: str, paths: list[Path], base_url: str = "",
    progress: Callable[[int], None] | None = None, on_total: Callable[[int], None] | None = None,
    *, mode: str = "replace", locale: str | None = None, allow_demo: bool = False,
) -> ImportReport:
    """Plan and commit in one go (a plan with conflicts raises ``Conflict``)."""
    plan = plan_import(store, mapping, site, paths, mode, locale, allow_demo=allow_demo)
    if plan.conflicts:
        raise Conflict("; ".join(plan.conflicts), "site")
    if on_total:
        on_total(len(plan.result.bundles))
    committed = commit_plan(store, plan, base_url=base_url)
    if progress:
        progress(len(plan.result.bundles))
    return report_of(plan, committed.provenance)


def write_report(report: ImportReport, path: Path) -> None:
    """Bad rows as CSV: line, patient, column, value, reason."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "patient", "column", "value", "reason"])
        for error in report.errors:
            writer.writerow([error.line, error.patient or "", error.column, error.value, error.reason])


def write_changes(plan: ImportPlan, path: Path) -> None:
    """What the import changes (or would change) as CSV, one row per record, a changed record with
    its old → new values, the held-back patients included: the record a data manager keeps beside
    the rejected-row report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["action", "patient", "record", "type", "id", "date", "line", "change"])
        for change in plan.changes:
            writer.writerow([change.action, change.patient, change.record, change.resource_type, change.res_id or "",
                             change.date or "", change.line or "", change.described()])
        for held in plan.held_back:
            writer.writerow(["held back", held.patient, "", "", "", "", " ".join(map(str, held.valid_lines)),
                             held.sentence()])


__all__ = ["RECORD_SYSTEM", "FhirError", "ImportReport", "import_files", "report_of", "write_changes", "write_report"]
