"""Bulk ``$import``: kick-off, status, result manifest, cancel, error files (HTTP-free).

``fhirfus.api.bulk`` maps requests onto these functions; jobs run in ``fhirfus.bulk.imports.worker``.
Status answers follow the Bulk Data pattern: 202 with ``X-Progress`` and ``Retry-After`` while the
job runs; 200 with the result manifest when done (per input: its URL, type, resources loaded, and
an ``error`` file of OperationOutcomes, one per refused line); 500 with an OperationOutcome when the
job failed; 404 for unknown, cancelled or expired jobs — and for anybody but the client that
kicked the job off, since its error files quote the requester's data.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from fhirfus.auth.access import Access
from fhirfus.bulk.imports import jobs
from fhirfus.bulk.imports.load import error_file, input_file, load_rank, progress_text
from fhirfus.bulk.imports.sources import parse_kick_off
from fhirfus.bulk.imports.worker import ImportWorker
from fhirfus.bulk.status import StatusAnswer, answer, gone, listed_file
from fhirfus.errors import FhirError, InvalidRequest, PayloadTooLarge
from fhirfus.fhir.validation import require_known_type
from fhirfus.store.repository import Store, format_instant

#: Where status and files live below the FHIR base (``/fhir/_import/{job}[/{file}]``).
STATUS_SEGMENT = "_import"
UPLOADED = "upload"


def _require_importer(caller: Access) -> None:
    caller.require_role("site", "admin")


def kick_off(worker: ImportWorker, caller: Access, body: Any, *, request_url: str, base_url: str) -> str:
    """A job for the inputs a Parameters body or manifest names (400 naming the element; 429 if busy)."""
    _require_importer(caller)
    inputs, source = parse_kick_off(body, worker.limits)
    for item in inputs:
        if item.res_type:
            caller.require(item.res_type, "c")
            caller.require(item.res_type, "u")
    worker.reserve()
    ordered = sorted(inputs, key=lambda i: load_rank(i.res_type))  # stable: the given order within a rank
    job_id = uuid.uuid4().hex
    directory = worker.new_directory(job_id)
    request = {"inputs": [i.to_json() for i in ordered], "source": source, "request_url": request_url,
               "base": base_url}
    worker.table.create(worker.store, job_id, caller, request, str(directory), worker.owner, jobs.FETCH)
    worker.submit(job_id)
    return job_id


def begin_upload(worker: ImportWorker, caller: Access, res_type: str | None) -> tuple[str, Path]:
    """Check an NDJSON upload before its body is read: (job id, the directory it goes to)."""
    _require_importer(caller)
    if res_type is not None:
        try:
            require_known_type(res_type)
        except FhirError as exc:
            raise InvalidRequest(exc.message, "type") from exc
        caller.require(res_type, "c")
        caller.require(res_type, "u")
    worker.reserve()
    job_id = uuid.uuid4().hex
    return job_id, worker.new_directory(job_id)


async def receive_upload(worker: ImportWorker, directory: Path, chunks: AsyncIterator[bytes]) -> int:
    """Store the body as the job's one input (413 beyond the byte limit, 400 when empty); its size."""
    size = 0
    with input_file(directory, 0).open("wb") as handle:
        async for chunk in chunks:
            size += len(chunk)
            if size > worker.limits.max_bytes:
                raise PayloadTooLarge(f"The upload exceeds the limit of {worker.limits.max_bytes} bytes per import")
            handle.write(chunk)
    if size == 0:
        raise InvalidRequest("The upload is empty; NDJSON (one resource per line) was expected", "body")
    return size


def finish_upload(worker: ImportWorker, caller: Access, job_id: str, directory: Path, res_type: str | None,
                  *, request_url: str, base_url: str) -> str:
    """Queue the job of a stored upload; it is loaded like a fetched input."""
    request = {"inputs": [{"type": res_type, "url": UPLOADED, "uploaded": True}], "source": None,
               "request_url": request_url, "base": base_url}
    worker.table.create(worker.store, job_id, caller, request, str(directory), worker.owner, jobs.LOAD)
    worker.submit(job_id)
    return job_id


def discard_upload(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def status_url(base_url: str, job_id: str) -> str:
    return f"{base_url}/{STATUS_SEGMENT}/{job_id}"


def status(store: Store, caller: Access, job_id: str, base_url: str, *, requires_access_token: bool) -> StatusAnswer:
    job = _visible_job(store, caller, job_id)
    return answer(job, jobs.now(), failed="The import failed",
                  progress=lambda: "queued" if job.status == jobs.QUEUED and job.attempts == 0 else
                  progress_text(job.progress, job.request["inputs"]),
                  manifest=lambda: manifest(job, base_url, requires_access_token=requires_access_token))


def manifest(job: jobs.ImportJob, base_url: str, *, requires_access_token: bool) -> dict:
    """The result manifest: what each input loaded, and where its refused lines are explained."""
    counts = job.progress["inputs"]
    inputs = job.request["inputs"]
    return {
        "transactionTime": format_instant(job.updated),
        "request": job.request["request_url"],
        "requiresAccessToken": requires_access_token,
        "output": [{"type": item["type"] or "Resource", "inputUrl": item["url"], "count": counts[i]["loaded"]}
                   for i, item in enumerate(inputs)],
        "error": [{"type": "OperationOutcome", "inputUrl": item["url"], "count": counts[i]["errors"],
                   "url": f"{status_url(base_url, job.id)}/{error_file(i)}"}
                  for i, item in enumerate(inputs) if counts[i]["errors"]],
    }


def cancel(store: Store, caller: Access, job_id: str) -> None:
    """DELETE on the status URL: a running job stops before its next chunk (what is committed stays)."""
    _visible_job(store, caller, job_id)
    if jobs.TABLE.withdraw(store, job_id) is None:
        raise gone("import", job_id)


def output_file(store: Store, caller: Access, job_id: str, name: str) -> tuple[Path, datetime | None]:
    """An error file of a completed job named in its manifest (nothing else of the job's directory)."""
    job = _visible_job(store, caller, job_id)
    listed = {error_file(i) for i, c in enumerate(job.progress["inputs"]) if c["errors"]} \
        if job.status == jobs.COMPLETED else set()
    return listed_file("import", job, name, listed), job.expires


def _visible_job(store: Store, caller: Access, job_id: str) -> jobs.ImportJob:
    """The job, to the client that kicked it off only; to anybody else it does not exist."""
    job = jobs.TABLE.live(store, job_id)
    if job is None or caller.client_id != job.client_id or caller.site != job.site:
        raise gone("import", job_id)
    return job
