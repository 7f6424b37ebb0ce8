"""Bulk Data ``$export`` (FHIR Bulk Data Access v2): kick-off, status, manifest, cancel, files.

HTTP-free: ``fhirfus.api.bulk`` maps requests onto these functions, the jobs themselves run in
``fhirfus.bulk.worker``. Status answers follow the spec (and what the Inferno Bulk Data
test kit checks): 202 with ``X-Progress`` and ``Retry-After`` while a job runs; 200 with the
completion manifest (``application/json``, ``Expires``) when done; 500 with an OperationOutcome
when the job failed; 404 with an OperationOutcome for unknown, cancelled or expired jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qsl

from fhirfus.auth.access import Access
from fhirfus.bulk import jobs, views
from fhirfus.bulk.params import ExportRequest, parse_export_params
from fhirfus.bulk.status import StatusAnswer, answer, gone, listed_file
from fhirfus.bulk.worker import ExportWorker
from fhirfus.bulk.writer import WrittenFile
from fhirfus.interactions import crud
from fhirfus.search.query import criteria_types, parse_query
from fhirfus.store import repository
from fhirfus.store.repository import Store, format_instant

#: Where status and files live below the FHIR base (``/fhir/_export/{job}[/{file}]``).
STATUS_SEGMENT = "_export"


def kick_off(
    worker: ExportWorker,
    caller: Access,
    level: str,
    params: Sequence[tuple[str, str]],
    *,
    request_url: str,
    base_url: str,
    group_id: str | None = None,
    lenient: bool = False,
) -> jobs.Job:
    """Check the request (400 for bad parameters, 404/410 for the Group) and queue the job (429 if busy)."""
    caller.require_role("site", "admin")
    if level == "group":
        assert group_id is not None
        crud.read(worker.store, caller, "Group", group_id)
    seen_by = caller.visibility
    with worker.store.reading() as conn:
        request = parse_export_params(level, params, group_id=group_id, lenient=lenient, base_url=base_url,
                                      seen_by=seen_by, terminology=repository.terminology_lookup(conn, seen_by))
    return worker.submit(_for_caller(caller, request), request_url)


def _for_caller(caller: Access, request: ExportRequest) -> ExportRequest:
    """Check the caller may export these types and search what their filters read (403), and
    confine a site client's job to its site."""
    for res_type in request.types or ("*",):
        caller.require(res_type, "s")
    for res_type, query in request.type_filters:
        caller.require(res_type, "s")
        for other in sorted(criteria_types(parse_query(res_type, parse_qsl(query, keep_blank_values=True)))):
            caller.require(other, "s")
    return replace(request, site=caller.visibility.site, client_id=caller.client_id)


def status_url(base_url: str, job_id: str) -> str:
    return f"{base_url}/{STATUS_SEGMENT}/{job_id}"


def status(store: Store, caller: Access, job_id: str, base_url: str, *, requires_access_token: bool) -> StatusAnswer:
    job = _visible_job(store, caller, job_id)

    def completed() -> dict:
        files = jobs.files_of(store, job_id)
        if job.request.level == views.LEVEL:  # $viewdefinition-export answers with its Parameters
            return views.manifest(job, files, status_url(base_url, job.id))
        return manifest(job, files, base_url, requires_access_token=requires_access_token)

    return answer(job, jobs.now(), progress=lambda: _progress(job), manifest=completed, failed="The export failed")


def manifest(job: jobs.Job, files: Sequence[WrittenFile], base_url: str, *, requires_access_token: bool) -> dict:
    """The completion manifest; file URLs are absolute (the v2 test kit requires it)."""
    assert job.transaction_time is not None

    def item(written: WrittenFile) -> dict:
        return {"type": written.res_type, "url": f"{status_url(base_url, job.id)}/{written.name}",
                "count": written.count}

    body = {
        "transactionTime": format_instant(job.transaction_time),
        "request": job.request_url,
        "requiresAccessToken": requires_access_token,
        "output": [item(f) for f in files if f.kind == "output"],
        "error": [item(f) for f in files if f.kind == "error"],
    }
    if job.request.since is not None:  # v2: what was deleted since, as transaction Bundles of DELETEs
        body["deleted"] = [item(f) for f in files if f.kind == "deleted"]
    return body


def cancel(store: Store, caller: Access, job_id: str) -> None:
    """DELETE on the status URL: a running job stops at its next page; files of a finished one go now."""
    _visible_job(store, caller, job_id)
    if jobs.TABLE.withdraw(store, job_id) is None:
        raise gone("export", job_id)


def output_file(store: Store, caller: Access, job_id: str, name: str) -> tuple[Path, datetime | None]:
    """The file of a completed job named in its manifest (nothing else under the export directory)."""
    job = _visible_job(store, caller, job_id)
    listed = {f.name for f in jobs.files_of(store, job_id)} if job.status == jobs.COMPLETED else set()
    return listed_file("export", job, name, listed), job.expires


def _visible_job(store: Store, caller: Access, job_id: str) -> jobs.Job:
    """The job, if the caller may see it: the client that kicked it off, or an admin. To anybody
    else it does not exist (404, as for an unknown id): its files hold the requester's data."""
    job = jobs.live(store, job_id)
    if job is None or (caller.role != "admin" and caller.client_id != job.request.client_id):
        raise gone("export", job_id)
    return job


def _progress(job: jobs.Job) -> str:
    unit = "rows" if job.request.level == views.LEVEL else "resources"
    text = "queued" if job.status == jobs.QUEUED else f"{job.percent}% done, {job.progress} {unit} written"
    return f"{text} (attempt {job.attempts})" if job.attempts > 1 else text
