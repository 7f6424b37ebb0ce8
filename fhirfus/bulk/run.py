"""One export run: the selected resources as of ``transactionTime``, streamed into NDJSON files.

Rows are read with keyset paging over ``resources.pk`` (``PAGE_SIZE`` rows per query, each page
its own short read transaction): memory stays bounded, no long transaction holds back SQLite's
WAL checkpoints or PostgreSQL's vacuum, and writers are never blocked. The JSON is copied from
the database as text, without parsing it in Python (but for Binaries: one whose securityContext
names a resource the job's site cannot see is left out, as its read would be refused).

Snapshot: ``transactionTime`` is taken when the run starts. The first pass exports resources
last changed at or before it; a second pass finds those changed since (updated or deleted while
the export ran) and exports the version that was current at ``transactionTime`` from the history
table. Resources created afterwards are left out, as the spec asks. ``_typeFilter`` matches are
staged when the run starts, so they are as of ``transactionTime`` too; membership in a patient
compartment is judged by the search index when a row is read, so a resource deleted during a
Patient- or Group-level export (its index rows are gone) is not recovered by the second pass.

Deletions (``_since`` exports only, Bulk Data v2's ``deleted`` array): every resource of the
exported types deleted after ``_since`` and still deleted at ``transactionTime`` is one line, a
transaction ``Bundle`` with one ``DELETE Type/id`` entry. A deleted resource has no index rows
left, so its patient compartment and ``_typeFilter`` match cannot be judged: Patient- and
Group-level exports list every deletion of their types the requester could see (a superset; a
client deleting an id it never had changes nothing).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, FromClause, Row, exists, func, literal, select

from fhirfus.bulk.params import ExportRequest
from fhirfus.bulk.patients import stage_patients
from fhirfus.bulk.select import export_types, selection, stage_type_filters
from fhirfus.bulk.writer import NdjsonFileSet, WrittenFile
from fhirfus.db.tables import search_reference
from fhirfus.db.visibility import Visibility, content_text
from fhirfus.errors import Issue
from fhirfus.fhir.projection import bulk_elements
from fhirfus.interactions import binary
from fhirfus.search.compiler import params_rows
from fhirfus.store import repository
from fhirfus.store.repository import Store

PAGE_SIZE = 2000
#: ``checkpoint(resources_written, fraction_done)``: called after every page; raising stops the run.
Checkpoint = Callable[[int, float], None]


@dataclass(frozen=True)
class ExportResult:
    transaction_time: datetime
    files: list[WrittenFile]

    @property
    def count(self) -> int:
        return sum(f.count for f in self.files if f.kind == "output")


@dataclass(frozen=True)
class ExportLimits:
    max_resources: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    page_size: int = PAGE_SIZE


def run_export(
    store: Store,
    request: ExportRequest,
    directory: Path,
    *,
    job_id: str | None = None,
    limits: ExportLimits = ExportLimits(),
    checkpoint: Checkpoint | None = None,
) -> ExportResult:
    """Export ``request`` into ``directory`` (created; files only, no manifest)."""
    directory.mkdir(parents=True, exist_ok=True)
    transaction_time = datetime.now(UTC)
    warnings = [*request.ignored]
    staging = request.level == "group" or bool(request.patients) or bool(request.type_filters)
    if staging and job_id is not None:
        with store.writing() as conn:
            if request.level == "group" or request.patients:
                warnings += stage_patients(conn, job_id, request)
            if request.type_filters:
                stage_type_filters(conn, job_id, request)
    elif request.level == "group" or request.patients:
        raise ValueError("a patient set is staged per job: job_id is required")
    seen_by = Visibility(request.site)  # the requester's rows only (a site client's job: its site's)
    rows = seen_by.resources()
    with store.reading() as conn:
        condition = selection(rows, request, job_id, repository.terminology_lookup(conn, seen_by))
    output = NdjsonFileSet(directory, max_resources=limits.max_resources, max_bytes=limits.max_bytes)
    deleted = NdjsonFileSet(directory, max_resources=limits.max_resources, max_bytes=limits.max_bytes,
                            kind="deleted", prefix="deleted-")
    report = checkpoint or (lambda _written, _fraction: None)
    try:
        with store.reading() as conn:
            highest = conn.execute(select(func.max(rows.c.pk))).scalar() or 0
        shaped = _shaper(request)
        _current_pass(store, seen_by, rows, condition, transaction_time, output, limits.page_size, highest, report,
                      shaped)
        _changed_pass(store, seen_by, rows, condition, request, transaction_time, output, deleted, limits.page_size,
                      highest, report, shaped)
        if request.since_instant is not None:
            _deleted_pass(store, rows, request, transaction_time, deleted, limits.page_size)
        if request.associated and "Provenance" not in export_types(request):
            _associated_pass(store, seen_by, rows, condition, request, transaction_time, output, limits.page_size,
                             shaped)
    except BaseException:
        output.abort()
        deleted.abort()
        raise
    files = output.close() + deleted.close()
    if warnings:
        errors = NdjsonFileSet(directory, max_resources=limits.max_resources, max_bytes=limits.max_bytes,
                               kind="error", prefix="error-")
        errors.write("OperationOutcome", [_warning(message) for message in warnings])
        files += errors.close()
    return ExportResult(transaction_time, files)


def _shaper(request: ExportRequest) -> Callable[[bytes], bytes]:
    """The stored JSON as it is, or (``_elements``) parsed and projected."""
    if not request.elements:
        return lambda text: text
    return lambda text: orjson.dumps(bulk_elements(orjson.loads(text), request.elements))


def _current_pass(
    store: Store, seen_by: Visibility, source: FromClause, condition: ColumnElement[bool], moment: datetime,
    output: NdjsonFileSet, page: int, highest: int, report: Checkpoint, shaped: Callable[[bytes], bytes],
) -> None:
    after = 0
    while True:
        with store.reading() as conn:
            rows = conn.execute(
                select(source.c.pk, source.c.res_type, content_text(source))
                .where(condition, source.c.deleted.is_(False), source.c.last_updated <= moment, source.c.pk > after)
                .order_by(source.c.pk)
                .limit(page)
            ).all()
            hidden = {row.pk for row in rows
                      if row.res_type == "Binary" and not binary.context_visible(conn, seen_by, orjson.loads(row.text))}
        if not rows:
            return
        by_type: dict[str, list[bytes]] = defaultdict(list)
        for row in rows:
            if row.pk not in hidden:
                by_type[row.res_type].append(shaped(row.text.encode()))
        for res_type, lines in by_type.items():
            output.write(res_type, lines)
        after = rows[-1].pk
        report(output.total, min(after / highest, 1.0) if highest else 1.0)
        if len(rows) < page:
            return


def _changed_pass(
    store: Store, seen_by: Visibility, source: FromClause, condition: ColumnElement[bool], request: ExportRequest,
    moment: datetime, output: NdjsonFileSet, deleted: NdjsonFileSet, page: int, highest: int, report: Checkpoint,
    shaped: Callable[[bytes], bytes],
) -> None:
    """Resources changed after ``moment`` (and existing before it): their version as of ``moment``
    (or, for a ``_since`` export, their deletion when they were deleted at ``moment``)."""
    since = request.since_instant
    after = 0
    history = seen_by.history()
    while True:
        with store.reading() as conn:
            rows = conn.execute(
                select(source.c.pk, source.c.res_type, source.c.res_id)
                .where(condition, source.c.last_updated > moment, source.c.pk <= highest, source.c.pk > after)
                .order_by(source.c.pk)
                .limit(page)
            ).all()
            for row in rows:
                previous = _version_at(conn, history, row.res_type, row.res_id, moment)
                if previous is None or (since is not None and previous.last_updated <= since):
                    continue
                if previous.method == "DELETE" or previous.content is None:
                    if since is not None and previous.method == "DELETE":
                        deleted.write("Bundle", [deletion(row.res_type, row.res_id)])
                    continue
                if row.res_type == "Binary" and not binary.context_visible(conn, seen_by, previous.content):
                    continue
                output.write(row.res_type, [shaped(orjson.dumps(previous.content))])
        if not rows:
            return
        after = rows[-1].pk
        report(output.total, 1.0)
        if len(rows) < page:
            return


def _deleted_pass(
    store: Store, source: FromClause, request: ExportRequest, moment: datetime, output: NdjsonFileSet, page: int,
) -> None:
    """Tombstones of the exported types written after ``_since`` and by ``moment``."""
    types = export_types(request)
    conditions = [source.c.deleted.is_(True), source.c.last_updated > request.since_instant,
                  source.c.last_updated <= moment]
    if request.types or request.level != "system":
        conditions.append(source.c.res_type.in_(types))
    after = 0
    while True:
        with store.reading() as conn:
            rows = conn.execute(
                select(source.c.pk, source.c.res_type, source.c.res_id).where(*conditions, source.c.pk > after)
                .order_by(source.c.pk).limit(page)
            ).all()
        if rows:
            output.write("Bundle", [deletion(row.res_type, row.res_id) for row in rows])
            after = rows[-1].pk
        if len(rows) < page:
            return


def _associated_pass(
    store: Store, seen_by: Visibility, rows: FromClause, condition: ColumnElement[bool], request: ExportRequest,
    moment: datetime, output: NdjsonFileSet, page: int, shaped: Callable[[bytes], bytes],
) -> None:
    """``includeAssociatedData``: the Provenance resources whose ``target`` is an exported resource
    (all of them, or for ``LatestProvenanceResources`` alone only each target's latest one).
    Skipped when Provenance is an exported type already."""
    provenance = seen_by.resources().alias("associated")
    link = search_reference.alias("associated_target")
    exported = exists().where(rows.c.res_type == link.c.target_type, rows.c.res_id == link.c.target_id, condition,
                              rows.c.deleted.is_(False), rows.c.last_updated <= moment)
    targets = [link.c.resource_pk == provenance.c.pk, params_rows(link, "Provenance", ("target",)), exported]  # type: ignore[arg-type]
    if "RelevantProvenanceResources" not in request.associated:
        later = seen_by.resources().alias("later")
        other = search_reference.alias("later_target")
        targets.append(~select(literal(1)).where(
            other.c.target_type == link.c.target_type, other.c.target_id == link.c.target_id,
            params_rows(other, "Provenance", ("target",)), other.c.resource_pk == later.c.pk,  # type: ignore[arg-type]
            later.c.res_type == "Provenance", later.c.deleted.is_(False), later.c.last_updated <= moment,
            later.c.last_updated > provenance.c.last_updated,
        ).correlate_except(later, other).exists())  # the candidate is two levels up: named, not guessed
    after = 0
    while True:
        with store.reading() as conn:
            found = conn.execute(
                select(provenance.c.pk, content_text(provenance))
                .where(provenance.c.res_type == "Provenance", provenance.c.deleted.is_(False),
                       provenance.c.last_updated <= moment, provenance.c.pk > after, exists().where(*targets))
                .order_by(provenance.c.pk).limit(page)
            ).all()
        if found:
            output.write("Provenance", [shaped(row.text.encode()) for row in found])
            after = found[-1].pk
        if len(found) < page:
            return


def deletion(res_type: str, res_id: str) -> bytes:
    """One line of a ``deleted`` file: a transaction Bundle deleting ``res_type/res_id``."""
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction",
                         "entry": [{"request": {"method": "DELETE", "url": f"{res_type}/{res_id}"}}]})


def _version_at(conn: Connection, h: FromClause, res_type: str, res_id: str, moment: datetime) -> Row[Any] | None:
    """The version of ``res_type/res_id`` current at ``moment`` (method, content, time)."""
    return conn.execute(
        select(h.c.method, h.c.content, h.c.last_updated)
        .where(h.c.res_type == res_type, h.c.res_id == res_id, h.c.last_updated <= moment)
        .order_by(h.c.version.desc())
        .limit(1)
    ).first()  # type: ignore[return-value]


def _warning(message: str) -> bytes:
    issue = Issue(message, code="informational", severity="warning")
    return orjson.dumps({"resourceType": "OperationOutcome", "issue": [issue.to_fhir()]})
