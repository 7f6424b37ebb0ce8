"""One pull: export at the source, download, load under the site's label, Provenance, watermark.

``pull_once`` is what ``fhirfus pull`` and the server's schedule run. A pull that stops half-way
(a crash, ``kill -9``) leaves the watermark where it was; the rerun resumes the same export while
the source keeps it (downloads continue where their files stopped) or exports again from the old
watermark, and reloads: PUT by id makes the hub converge to the source's data either way.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt

from fhirfus.db.visibility import with_site_label
from fhirfus.errors import FhirError
from fhirfus.fhir.representation import PATTERNS
from fhirfus.pull import definitions
from fhirfus.pull.client import MAX_FILE_BYTES, BulkClient, PullError, SigningKey
from fhirfus.pull.definitions import Definition
from fhirfus.pull.load import Loaded, commit_provenance, load_deleted, load_order, load_output, skipped_type
from fhirfus.store.repository import Store

#: Longest watermark (``pull_definitions.since``).
MAX_WATERMARK = 64

URI = "urn:ietf:rfc:3986"


@dataclass
class PullReport:
    name: str
    transaction_time: str = ""
    written: int = 0
    deleted: int = 0
    source_errors: int = 0
    skipped: int = 0                                             # definitional resources left at the source
    files: list[dict[str, Any]] = field(default_factory=list)   # url, type, kind, sha256, size, resumed_from
    resumed_export: bool = False

    def line(self) -> str:
        return (f"{self.name}: {self.written} written, {self.deleted} deletions applied, {len(self.files)} files, "
                f"transactionTime {self.transaction_time}" + (" (resumed)" if self.resumed_export else ""))


def pull_once(
    store: Store, definition: Definition, work_dir: Path, clock: Callable[[], datetime], *,
    transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] | None = None,
    on_stage: Callable[[str], None] | None = None, max_file_bytes: int = MAX_FILE_BYTES, hub_base: str = "",
) -> PullReport:
    """Run ``definition`` once; its status row says how it went (and the error, raised too).
    ``max_file_bytes``: the most one file of the source may be (``FHIRFUS_PULL_MAX_FILE_BYTES``);
    ``hub_base``: the hub's own base URL (``FHIRFUS_BASE_URL``), under which pulled data may not point."""
    definitions.started(store, definition.name, clock())
    try:
        return _pull(store, definition, work_dir, clock, transport, sleep, on_stage or (lambda _: None),
                     max_file_bytes, hub_base)
    except (FhirError, httpx.HTTPError, jwt.PyJWTError, OSError, ValueError, KeyError, TypeError) as exc:
        message = exc.message if isinstance(exc, FhirError) else f"{type(exc).__name__}: {exc}"
        definitions.failed(store, definition, message, clock())
        raise PullError(f"pull {definition.name} failed: {message}", "pull") from exc


def _pull(store: Store, definition: Definition, work_dir: Path, clock: Callable[[], datetime],
          transport: httpx.BaseTransport | None, sleep: Callable[[float], None] | None,
          stage: Callable[[str], None], max_file_bytes: int, hub_base: str) -> PullReport:
    key = SigningKey.read(Path(definition.key_path))
    options: dict[str, Any] = {"transport": transport, "max_file_bytes": max_file_bytes} | (
        {"sleep": sleep} if sleep else {})
    client = BulkClient(definition.source_url, definition.client_id, key, **options)
    report = PullReport(definition.name)
    try:
        job_url = definition.job_url
        manifest = client.manifest(job_url) if job_url else None
        report.resumed_export = manifest is not None
        if manifest is None:
            job_url = client.kick_off(group=definition.group_id, patient_level=definition.patient_level,
                                      types=definition.types, since=definition.since)
            definitions.in_flight(store, definition.name, job_url)
            stage(f"export started at {job_url}")
            manifest = client.manifest(job_url, stage)
        if manifest is None or job_url is None:
            raise PullError(f"the export at {job_url} vanished before it finished", "source")
        transaction_time = watermark(manifest)
        report.transaction_time = transaction_time
        folder = work_dir / definition.name / hashlib.sha256(job_url.encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        with_token = manifest.get("requiresAccessToken") is True
        loaded = Loaded()
        outputs = sorted(enumerate(_items(manifest, "output")), key=lambda item: load_order(item[1]["type"]))
        for index, item in outputs:
            if skipped_type(item["type"], definition.types):
                loaded.skipped += int(item.get("count") or 0)
                continue
            path = _fetch(client, report, folder, f"output-{index:05d}", item, "output", with_token)
            load_output(store, path, definition.site, definition.source_url, loaded, hub_base=hub_base)
            stage(f"loaded {item['type']} ({loaded.written} so far)")
        for index, item in enumerate(_items(manifest, "deleted")):  # Bundles of deletes of any type
            path = _fetch(client, report, folder, f"deleted-{index:05d}", item, "deleted", with_token)
            load_deleted(store, path, definition.site, loaded)
        for index, item in enumerate(_items(manifest, "error")):
            path = _fetch(client, report, folder, f"error-{index:05d}", item, "error", with_token)
            report.source_errors += sum(1 for line in path.open("rb") if line.strip())
        report.written, report.deleted, report.skipped = loaded.written, loaded.deleted, loaded.skipped
        provenance = _provenance(definition, job_url, report, clock())
        commit_provenance(store, provenance, lambda conn: definitions.finished_in(
            conn, definition, transaction_time, loaded.written, clock()))
        client.forget(job_url)
        shutil.rmtree(folder, ignore_errors=True)
        return report
    finally:
        client.close()


def _text(manifest: dict, name: str) -> str:
    value = manifest.get(name)
    if not isinstance(value, str) or not value:
        raise PullError(f"the manifest has no {name}", f"manifest.{name}")
    return value


def watermark(manifest: dict) -> str:
    """The manifest's ``transactionTime``, the next pull's ``_since``: a FHIR instant that fits
    ``pull_definitions.since``, checked before anything is loaded (a source's odd answer fails the
    pull naming it, instead of a database error after the whole load)."""
    value = _text(manifest, "transactionTime")
    if len(value) > MAX_WATERMARK or not PATTERNS["instant"].match(value):
        raise PullError(f"the manifest's transactionTime {value[:80]!r} is no FHIR instant of at most "
                        f"{MAX_WATERMARK} characters", "manifest.transactionTime")
    return value


def _items(manifest: dict, section: str) -> list[dict]:
    items = manifest.get(section) or []
    if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("url"), str) and isinstance(i.get("type"), str) for i in items):
        raise PullError(f"the manifest's {section} must be a list of {{type, url}}", f"manifest.{section}")
    return items


def _fetch(client: BulkClient, report: PullReport, folder: Path, name: str, item: dict, kind: str,
           with_token: bool) -> Path:
    got = client.download(item["url"], folder / f"{name}.ndjson", with_token=with_token)
    report.files.append({"url": item["url"], "type": item["type"], "kind": kind, "sha256": got.sha256,
                         "size": got.size, "resumed_from": got.resumed_from})
    return got.path


def _provenance(definition: Definition, job_url: str, report: PullReport, moment: datetime) -> dict:
    """One Provenance per pull: the source as agent, the manifest and every file (with its sha256)
    as entities. Its id is the pull's, so a pull recorded twice is one Provenance."""
    identity = f"{definition.name}|{job_url}|{report.transaction_time}"
    manifest = {"role": "source", "what": {"identifier": {"system": URI, "value": job_url},
                                          "display": f"Bulk Data manifest, transactionTime {report.transaction_time}"}}
    files = [{"role": "source", "what": {"identifier": {"system": URI, "value": f["url"]},
                                        "display": f"{f['kind']} {f['type']}, sha256 {f['sha256']}, {f['size']} bytes"}}
             for f in report.files]
    provenance = {
        "resourceType": "Provenance",
        "id": "pull-" + hashlib.sha256(identity.encode()).hexdigest()[:40],
        "target": [{"display": f"{report.written} resources written and {report.deleted} deletions applied for "
                               f"site {definition.site} by pull {definition.name}"}],
        "recorded": moment.isoformat(timespec="seconds"),
        "activity": {"text": "Bulk Data pull"},
        "agent": [{"who": {"identifier": {"system": URI, "value": definition.source_url},
                           "display": f"Bulk Data source {definition.source_url}"}}],
        "entity": [manifest, *files],
    }
    return with_site_label(provenance, definition.site)
