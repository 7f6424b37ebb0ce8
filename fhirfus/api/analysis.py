"""``$analysis-export``: de-identified analysis files of a cohort, in the Bulk Data async pattern.

- ``GET /fhir/Group/{id}/$analysis-export`` (``Group/_all/...`` or ``GET /fhir/$analysis-export``:
  every patient) with ``Prefer: respond-async``; parameters ``_outputFormat`` (csv | parquet)
  and ``policy`` (a file of ``fhirfus/ig/policies``). Everything that would make the job fail for
  certain (unknown policy or group, no ``FHIRFUS_DEID_KEY``, bad format) is answered at once
  with an OperationOutcome; otherwise 202 with ``Content-Location`` = the status URL.
- ``GET /fhir/_analysis/{job}``: 202 with ``X-Progress`` while running, 200 with the manifest
  (``output[].url`` per file) when done, the job's error as an OperationOutcome if it failed.
- ``GET /fhir/_analysis/{job}/{file}``: one output file; ``DELETE /fhir/_analysis/{job}``
  removes the job and its files.

Include this router before the resource router (``/fhir/_analysis/...`` would otherwise read as
a resource type). Stop the job threads on shutdown with ``stop_analysis_jobs(app)``.

With authentication on, analysts and admins may start an export (site clients are confined to
their own rows, which an export across the cohort would bypass: 403), and a job's status and
files answer only the client that started it (404 to anyone else, so job ids leak nothing).
"""

from __future__ import annotations

import threading
from pathlib import Path

from fastapi import APIRouter, FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from fhirfus.analysis.jobs import AnalysisJobs, JobState
from fhirfus.analysis.source import ALL_PATIENTS, resolve_cohort
from fhirfus.api.asyncjobs import accepted, require_async, status_response
from fhirfus.api.http import base_url, caller, fhir_response
from fhirfus.bulk.status import StatusAnswer
from fhirfus.errors import InvalidRequest, Issue, NotFound
from fhirfus.fhir.outcome import information, operation_outcome

router = APIRouter(prefix="/fhir")

STATUS_SEGMENT = "_analysis"
PARAMETERS = frozenset({"_outputFormat", "policy"})
_lock = threading.Lock()


def analysis_jobs(app: FastAPI) -> AnalysisJobs:
    """The app's job registry, created on first use (jobs live under FHIRFUS_EXPORT_DIR/analysis)."""
    with _lock:
        jobs = getattr(app.state, "analysis_jobs", None)
        if jobs is None:
            settings = app.state.settings
            root = Path(settings.export_dir) / "analysis"
            jobs = AnalysisJobs(app.state.store, root.resolve(), key=settings.deid_key,
                                expire_seconds=settings.export_expire_seconds)
            app.state.analysis_jobs = jobs
        return jobs


def stop_analysis_jobs(app: FastAPI) -> None:
    jobs = getattr(app.state, "analysis_jobs", None)
    if jobs is not None:
        jobs.shutdown()
        app.state.analysis_jobs = None


@router.get("/$analysis-export")
async def analysis_export_all(request: Request) -> Response:
    return await _kick_off(request, ALL_PATIENTS)


@router.get("/Group/{group_id}/$analysis-export")
async def analysis_export_group(request: Request, group_id: str) -> Response:
    return await _kick_off(request, group_id)


def _own_job(request: Request, job_id: str) -> JobState:
    """The job, if the caller started it (or authentication is off)."""
    job = analysis_jobs(request.app).get(job_id)
    if request.app.state.settings.auth != "off" and job.client != caller(request).client_id:
        raise NotFound(f"No analysis job {job_id}", "job")
    return job


@router.get(f"/{STATUS_SEGMENT}/{{job_id}}")
def analysis_status(request: Request, job_id: str) -> Response:
    job = _own_job(request, job_id)
    if job.status in ("accepted", "running"):
        return status_response(StatusAnswer.in_progress(job.progress, retry_after=1))
    if job.status == "failed":
        issues = [Issue(i.get("diagnostics", ""), i.get("code", "exception"), i.get("severity", "error"),
                        tuple(i.get("expression", ()))) for i in job.issues]
        return fhir_response(request, operation_outcome(issues), job.http_status or 500)
    return status_response(StatusAnswer.done(_manifest(request, job)))


@router.delete(f"/{STATUS_SEGMENT}/{{job_id}}")
def analysis_delete(request: Request, job_id: str) -> Response:
    _own_job(request, job_id)
    analysis_jobs(request.app).delete(job_id)
    return fhir_response(request, information(f"Analysis job {job_id} deleted with its files"), 202)


@router.get(f"/{STATUS_SEGMENT}/{{job_id}}/{{name}}")
def analysis_file(request: Request, job_id: str, name: str) -> Response:
    _own_job(request, job_id)
    path, media_type = analysis_jobs(request.app).file(job_id, name)
    return FileResponse(path, media_type=media_type, filename=name)


def _manifest(request: Request, job: JobState) -> dict:
    base = f"{base_url(request)}/{STATUS_SEGMENT}/{job.id}"
    output = []
    for entry in job.files:
        item = {"type": entry["kind"], "url": f"{base}/{entry['name']}"}
        if entry.get("count") is not None:
            item["count"] = entry["count"]
        output.append(item)
    return {
        "transactionTime": job.transaction_time,
        "request": job.request,
        "requiresAccessToken": request.app.state.settings.auth != "off",
        "output": output,
        "error": [],
        "extension": {"format": job.format, **{_camel(k): v for k, v in job.deidentification.items()}},
    }


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


async def _kick_off(request: Request, group_id: str) -> Response:
    who = caller(request)
    who.require_role("analyst", "admin")
    require_async(request, "$analysis-export runs asynchronously: send the header 'Prefer: respond-async'")
    params = request.query_params
    unknown = sorted(set(params) - PARAMETERS)
    if unknown:
        raise InvalidRequest(f"Unknown parameter(s) {', '.join(unknown)}; supported: {', '.join(sorted(PARAMETERS))}",
                             unknown[0])
    from fhirfus.analysis.export import output_format, prepare  # pandas & co. load on first use, not at start-up

    fmt = output_format(params.get("_outputFormat"))
    policy = params.get("policy") or None
    store = request.app.state.store

    def check() -> None:
        prepare(policy, request.app.state.settings.deid_key)
        resolve_cohort(store, group_id)

    await run_in_threadpool(check)
    jobs = analysis_jobs(request.app)
    job = jobs.submit(str(request.url), group_id, fmt, policy, who.client_id)
    location = f"{base_url(request)}/{STATUS_SEGMENT}/{job.id}"
    return accepted(request, location, f"Analysis export {job.id} accepted; poll {location}")
