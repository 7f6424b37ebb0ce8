"""The console's one adapter over ``fhirfus.ingest``: preview a site file, commit it, list imports.

Everything the coordinator pages need from the import lives behind these functions, over the
import plan (``ingest/plan.py``: rejected and held-back rows, the changes against what the site has
stored, replace semantics, one transaction with a Provenance). An upload is kept under ``FHIRFUS_EXPORT_DIR/console-imports/<id>/`` with who uploaded
it for which site and mapping; only that person may commit or cancel it, and the site is always the
person's own (``Access.site``), never a form field. The uploaded file is removed once committed (the
history keeps the outcome and the rejected-rows report), cancelled, or left in preview for a day.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fhirfus.auth.access import Access
from fhirfus.errors import Conflict, FhirError, InvalidRequest, NotFound
from fhirfus.ingest.mapping.spec import available
from fhirfus.ingest.plan import ImportPlan, commit_plan, plan_import
from fhirfus.ingest.site_import import ImportReport, write_changes, write_report
from fhirfus.store.repository import Store

READABLE = (".csv", ".tsv", ".txt", ".xlsx")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Rejected:
    line: int
    patient: str
    column: str
    value: str
    reason: str


@dataclass
class ChangeRow:
    """One line of the preview's list of changes: a patient's visit added, changed or removed."""

    patient: str
    action: str  # added | changed | removed
    record: str
    kind: str
    date: str
    line: str
    change: str  # in words; a changed record's old → new values


@dataclass
class Preview:
    upload_id: str
    filename: str
    mapping: str
    site: str
    rows: int
    rejected: list[Rejected]
    held_back: list[str]  # patients left out because one of their rows is rejected
    patients_new: list[str]
    patients_stored: list[str]
    resources: dict[str, int] = field(default_factory=dict)  # what the accepted rows produce, by type
    changes: dict[str, int] = field(default_factory=dict)  # "added session" → count, against what is stored
    listed: list[ChangeRow] = field(default_factory=list)  # the changes one by one, patient by patient


@dataclass
class Outcome:
    upload_id: str
    filename: str
    mapping: str
    site: str
    who: str
    at: str
    status: str  # committed | failed
    message: str
    rows: int = 0
    patients_loaded: int = 0
    patients_rejected: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected_rows: int = 0
    removed: int = 0
    http_status: int = 200  # a failed commit's error status: the page and its audit record say it failed


def mappings() -> list[str]:
    return available()


def _root(export_dir: str) -> Path:
    return Path(export_dir).resolve() / "console-imports"


def _folder(export_dir: str, upload_id: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{32}", upload_id):
        raise NotFound(f"no upload {upload_id}", "upload")
    return _root(export_dir) / upload_id


def _own_upload(export_dir: str, upload_id: str, caller: Access) -> tuple[Path, dict]:
    """An upload of this person (404 for anyone else's, as for one never made)."""
    folder = _folder(export_dir, upload_id)
    meta_path = folder / "upload.json"
    if not meta_path.exists():
        raise NotFound(f"no upload {upload_id}", "upload")
    meta = json.loads(meta_path.read_text())
    if meta["who"] != caller.client_id or meta["site"] != caller.site:
        raise NotFound(f"no upload {upload_id}", "upload")
    return folder, meta


def _site_of(caller: Access) -> str:
    if caller.role != "site" or not caller.site:
        raise InvalidRequest("Only a site coordinator imports site files", "site")
    return caller.site


#: Seconds an upload previewed but neither committed nor cancelled is kept.
ABANDONED_AFTER = 24 * 3600


def _sweep(export_dir: str) -> None:
    """Remove uploads left in preview (they hold a site file's patient data)."""
    root = _root(export_dir)
    now = datetime.now(UTC).timestamp()
    for meta in root.glob("*/upload.json") if root.exists() else ():
        if not (meta.parent / "outcome.json").exists() and now - meta.stat().st_mtime > ABANDONED_AFTER:
            shutil.rmtree(meta.parent, ignore_errors=True)


def preview(store: Store, caller: Access, export_dir: str, filename: str, content: bytes, mapping: str) -> Preview:
    """Keep the upload and tell what committing it would do, writing nothing to the store."""
    site = _site_of(caller)
    _sweep(export_dir)
    if mapping not in available():
        raise InvalidRequest(f"unknown mapping '{mapping}' (one of {', '.join(available())})", "mapping")
    name = _SAFE_NAME.sub("_", Path(filename or "upload.csv").name)[:120] or "upload.csv"
    if not name.lower().endswith(READABLE):
        raise InvalidRequest(f"{name}: the console reads CSV, tab-separated text or Excel files "
                             "(.csv, .tsv, .txt, .xlsx)", "file")
    if not content.strip():
        raise InvalidRequest(f"{name} is empty", "file")
    upload_id = uuid.uuid4().hex
    folder = _folder(export_dir, upload_id)
    folder.mkdir(parents=True)
    path = folder / name
    path.write_bytes(content)
    try:
        plan = _plan(store, caller, folder / name, mapping, site)
    except FhirError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    write_changes(plan, folder / "changes.csv")
    (folder / "upload.json").write_text(json.dumps({
        "who": caller.client_id, "site": site, "mapping": mapping, "filename": name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "changes": changes_digest(plan)}))
    result = plan.result
    resources: Counter[str] = Counter()
    for bundle in result.bundles.values():
        resources.update(e["resource"]["resourceType"] for e in bundle.get("entry", []))
    new = sorted({c.patient for c in plan.changes if c.resource_type == "Patient" and c.action == "added"})
    changes = Counter(f"{c.action} {c.kind}" for c in plan.changes)
    return Preview(
        upload_id, name, mapping, site, result.rows,
        [Rejected(e.line, e.patient or "", e.column, e.value, e.reason) for e in result.errors],
        sorted(h.patient for h in plan.held_back),
        new, sorted(k for k in result.bundles if k not in new),
        dict(sorted(resources.items())), dict(sorted(changes.items())),
        [ChangeRow(c.patient, c.action, c.record, c.kind, c.date or "", str(c.line or ""), c.described())
         for c in plan.listed_changes()],
    )


def changes_digest(plan: ImportPlan) -> str:
    """What a preview showed, as a digest: a commit whose plan differs (the stored data changed
    in between) is refused rather than writing what nobody saw."""
    shown = [[asdict(c) for c in plan.changes], [asdict(h) for h in plan.held_back]]
    return hashlib.sha256(json.dumps(shown, sort_keys=True, default=str).encode()).hexdigest()


def _plan(store: Store, caller: Access, path: Path, mapping: str, site: str) -> ImportPlan:
    """The import plan of one upload, in replace mode (the file is the site's truth for its patients)."""
    plan = plan_import(store, mapping, site, [path], "replace", caller=caller)
    if plan.conflicts:
        raise InvalidRequest(f"{path.name}: " + "; ".join(plan.conflicts), "file")
    return plan


def commit(store: Store, caller: Access, export_dir: str, upload_id: str, base_url: str = "") -> Outcome:
    """Import a previewed upload (its valid patients; rejected ones are held back, as the preview said)."""
    folder, meta = _own_upload(export_dir, upload_id, caller)
    if (folder / "outcome.json").exists():
        raise InvalidRequest("this upload was committed already", "upload")
    outcome = Outcome(upload_id, meta["filename"], meta["mapping"], meta["site"], meta["who"],
                      datetime.now(UTC).isoformat(timespec="seconds"), "committed", "")
    try:
        plan = _plan(store, caller, folder / meta["filename"], meta["mapping"], meta["site"])
        if changes_digest(plan) != meta.get("changes"):
            raise Conflict(f"The site's stored data changed since {meta['filename']} was checked, so the changes "
                           "listed in the preview are no longer what it would do; check the file again", "upload")
        committed = commit_plan(store, plan, caller, base_url)
    except FhirError as exc:
        outcome.status, outcome.message, outcome.http_status = "failed", exc.message, exc.status
        (folder / "changes.csv").unlink(missing_ok=True)  # nothing changed
    else:
        result = plan.result
        write_report(ImportReport(errors=result.errors), folder / "report.csv")
        write_changes(plan, folder / "changes.csv")
        outcome.rows, outcome.patients_loaded, outcome.patients_rejected = (
            result.rows, len(result.bundles), len(result.rejected_patients))
        outcome.created, outcome.updated, outcome.unchanged = committed.added, committed.changed, plan.unchanged
        outcome.removed = committed.removed
        outcome.rejected_rows = len(result.errors)
        outcome.message = committed.provenance or ""
    (folder / "outcome.json").write_text(json.dumps(asdict(outcome)))
    (folder / meta["filename"]).unlink(missing_ok=True)  # the store has it now; the history keeps the report
    return outcome


def cancel(caller: Access, export_dir: str, upload_id: str) -> None:
    folder, _ = _own_upload(export_dir, upload_id, caller)
    if (folder / "outcome.json").exists():
        raise InvalidRequest("this upload was committed; it stays in the import history", "upload")
    shutil.rmtree(folder, ignore_errors=True)


def history(caller: Access, export_dir: str) -> list[Outcome]:
    """The site's committed imports, newest first."""
    return [o for o in all_history(export_dir) if o.site == caller.site]


def all_history(export_dir: str) -> list[Outcome]:
    """Every site's imports, committed or failed, newest first (the admin's jobs page)."""
    root = _root(export_dir)
    found = [Outcome(**json.loads(path.read_text())) for path in (root.glob("*/outcome.json") if root.exists() else ())]
    return sorted(found, key=lambda o: o.at, reverse=True)


def changes_file(caller: Access, export_dir: str, upload_id: str) -> Path:
    """The list of changes (CSV) of a previewed upload of this person, or of one of the site's
    committed imports."""
    folder = _folder(export_dir, upload_id)
    outcome_path = folder / "outcome.json"
    if outcome_path.exists():
        visible = json.loads(outcome_path.read_text())["site"] == caller.site
    else:
        try:
            _own_upload(export_dir, upload_id, caller)
            visible = True
        except NotFound:
            visible = False
    if not visible or not (folder / "changes.csv").exists():
        raise NotFound(f"no list of changes {upload_id}", "upload")
    return folder / "changes.csv"


def report_file(caller: Access, export_dir: str, upload_id: str) -> Path:
    """The rejected-rows report of one of the site's imports."""
    folder = _folder(export_dir, upload_id)
    outcome_path = folder / "outcome.json"
    if not outcome_path.exists() or json.loads(outcome_path.read_text())["site"] != caller.site \
            or not (folder / "report.csv").exists():
        raise NotFound(f"no import report {upload_id}", "upload")
    return folder / "report.csv"
