"""``fhirfus import``: site files through a mapping spec into the store, one transaction per patient.

Bad rows are reported by line, column, value and reason (and written to a CSV report); every
patient with a bad row is left out entirely; the rest is written with conditional updates on
stable identifiers, so a re-import changes nothing and an edited row updates its resource. Each
import is recorded by a Provenance (file hash, mapping, site, time) — created once per file
content, so re-importing the same file adds nothing either.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fhirfus.auth.access import SERVER
from fhirfus.errors import FhirError, InvalidRequest
from fhirfus.ingest.mapping.engine import RECORD_SYSTEM, MappingResult, RowError, check_header, map_rows
from fhirfus.ingest.mapping.spec import MappingSpec, load_spec
from fhirfus.interactions import bundles, crud
from fhirfus.store import repository
from fhirfus.store.repository import Store

MAPPING_BASE = "https://fhirfus.org/fhir/mapping/"


@dataclass
class ImportReport:
    files: list[str] = field(default_factory=list)
    rows: int = 0
    patients_loaded: int = 0
    patients_rejected: int = 0
    resources_created: int = 0
    resources_updated: int = 0
    resources_unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    provenance: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """CSV/TSV rows (delimiter sniffed, BOM tolerated) as dicts keyed by the header."""
    text = path.read_text(encoding="utf-8-sig")
    try:
        dialect = csv.Sniffer().sniff(text.splitlines()[0] if text else ",", delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    return list(reader.fieldnames or []), list(reader)


def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _count(response: dict, report: ImportReport, started: datetime, seen: set[str]) -> list[str]:
    """Tally created / updated / unchanged (a no-op update keeps its old version and lastModified;
    shared resources such as the site Organization come back unchanged in later patients)."""
    patients = []
    for entry in response.get("entry", []):
        status = entry["response"]["status"]
        location = entry["response"].get("location", "")
        modified = datetime.fromisoformat(entry["response"].get("lastModified", "1970-01-01T00:00:00+00:00"))
        first_time = location not in seen
        seen.add(location)
        if status.startswith("201"):
            report.resources_created += 1
        elif modified < started or not first_time:
            report.resources_unchanged += 1
        else:
            report.resources_updated += 1
        if location.startswith("Patient/"):
            patients.append("/".join(location.split("/")[:2]))
    return patients


def provenance_id(spec: MappingSpec, site: str, digest: str) -> str:
    """One Provenance per (mapping, site, file content): Provenance has no identifier in R4."""
    return "import-" + hashlib.sha256(f"{spec.name}|{site}|{digest}".encode()).hexdigest()[:40]


def _provenance(spec: MappingSpec, site: str, paths: list[Path], digest: str, targets: list[str], site_org: str | None) -> dict:
    agent_who = {"reference": site_org} if site_org else {"display": f"site {site}"}
    return {
        "resourceType": "Provenance",
        "id": provenance_id(spec, site, digest),
        "target": [{"reference": t} for t in targets],
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "policy": [f"{MAPPING_BASE}{spec.name}"],
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE"}],
                     "text": f"fhirfus import --mapping {spec.name} --site {site}"},
        "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                        "code": "author"}]}, "who": agent_who}],
        "entity": [{"role": "source", "what": {"identifier": {"system": "urn:fhirfus:sha256", "value": digest},
                                               "display": ", ".join(p.name for p in paths)}}],
        "meta": {"security": [{"system": "https://fhirfus.org/fhir/CodeSystem/site", "code": site}]},
    }


def import_files(
    store: Store, mapping: str, site: str, paths: list[Path], base_url: str = "",
    progress: Callable[[int], None] | None = None, on_total: Callable[[int], None] | None = None,
) -> ImportReport:
    spec = load_spec(mapping)
    report = ImportReport(files=[str(p) for p in paths])
    results: list[MappingResult] = []
    for path in paths:
        header, rows = read_rows(path)
        missing = check_header(spec, header)
        if missing:
            raise InvalidRequest(f"{path.name}: columns missing for mapping '{spec.name}': {', '.join(missing)}", "header")
        result = map_rows(spec, rows, site)
        results.append(result)
        report.rows += result.rows
        report.errors += result.errors
        report.patients_rejected += len(result.rejected_patients)
    if on_total:
        on_total(sum(len(r.bundles) for r in results))
    context = bundles.Context(store, SERVER, base_url)
    started = datetime.now(UTC)
    seen: set[str] = set()
    targets: list[str] = []
    site_org: str | None = None
    for result in results:
        for bundle in result.bundles.values():
            response = bundles.process(context, bundle, "minimal")
            targets += _count(response, report, started, seen)
            site_org = site_org or _site_org(bundle, response)
            report.patients_loaded += 1
            if progress:
                progress(1)
    if targets:
        report.provenance = _record_import(store, _provenance(spec, site, paths, _digest(paths), targets, site_org))
    return report


def _record_import(store: Store, provenance: dict) -> str:
    """Write the Provenance unless this very import (same file content) was recorded before."""
    with store.writing() as conn:
        existing = repository.current(conn, SERVER.visibility, "Provenance", provenance["id"])
        if existing is not None and not existing.deleted:
            return f"Provenance/{existing.res_id}/_history/{existing.version}"
        resource = crud.accept(SERVER, provenance, "Provenance")
        stored = crud.update_in(conn, SERVER, "Provenance", provenance["id"], resource).stored
    return f"Provenance/{stored.res_id}/_history/{stored.version}"


def _site_org(bundle: dict, response: dict) -> str | None:
    for entry, answer in zip(bundle["entry"], response["entry"], strict=True):
        if entry["resource"]["resourceType"] == "Organization":
            location = answer["response"].get("location", "")
            return "/".join(location.split("/")[:2]) or None
    return None


def write_report(report: ImportReport, path: Path) -> None:
    """Bad rows as CSV: line, patient, column, value, reason."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "patient", "column", "value", "reason"])
        for error in report.errors:
            writer.writerow([error.line, error.patient or "", error.column, error.value, error.reason])


__all__ = ["RECORD_SYSTEM", "FhirError", "ImportReport", "import_files", "write_report"]
