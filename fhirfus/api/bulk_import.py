"""Bulk ``$import`` routes: kick-off (a manifest of NDJSON URLs, or the NDJSON itself), status URL,
error files, cancel.

Included before the resource router (``/fhir/_import/...`` is no resource type). The worker pool
starts and stops with the app, or on first use when an app runs without lifespan events.
"""

from __future__ import annotations

import threading
from email.utils import format_datetime

from fastapi import APIRouter, FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from fhirfus.api.asyncjobs import accepted, request_url, require_async, status_response
from fhirfus.api.bulk import NDJSON
from fhirfus.api.http import base_url, caller, fhir_response, read_body
from fhirfus.api.negotiation import rendering_for
from fhirfus.bulk.imports import service
from fhirfus.bulk.imports.service import STATUS_SEGMENT
from fhirfus.bulk.imports.worker import ImportWorker
from fhirfus.errors import UnsupportedMediaType
from fhirfus.fhir.outcome import information
from fhirfus.fhir.validation import parse_json

router = APIRouter(prefix="/fhir")
_start_lock = threading.Lock()
UPLOAD_TYPES = ("application/fhir+ndjson", "application/ndjson", "application/x-ndjson")


def start_imports(app: FastAPI) -> ImportWorker:
    with _start_lock:
        worker = getattr(app.state, "bulk_imports", None)
        if worker is None:
            worker = ImportWorker(app.state.store, app.state.settings)
            worker.start()
            app.state.bulk_imports = worker
        return worker


def stop_imports(app: FastAPI) -> None:
    worker = getattr(app.state, "bulk_imports", None)
    if worker is not None:
        worker.stop()
        app.state.bulk_imports = None


@router.post("/$import")
async def import_kick_off(request: Request) -> Response:
    """``Prefer: respond-async`` required. Body: a Parameters resource or a manifest (JSON), or NDJSON
    (``Content-Type: application/fhir+ndjson``; ``?type=T`` when every line is a T)."""
    rendering = rendering_for(request)
    require_async(request)
    who = caller(request)
    base = base_url(request)
    worker = start_imports(request.app)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    url = request_url(request, base)
    if content_type in UPLOAD_TYPES:
        res_type = request.query_params.get("type")
        job_id, directory = await run_in_threadpool(service.begin_upload, worker, who, res_type)
        try:
            await service.receive_upload(worker, directory, request.stream())
            await run_in_threadpool(service.finish_upload, worker, who, job_id, directory, res_type,
                                    request_url=url, base_url=base)
        except BaseException:
            service.discard_upload(directory)
            raise
    elif content_type in ("application/fhir+json", "application/json", ""):
        body = parse_json(await read_body(request))
        job_id = await run_in_threadpool(service.kick_off, worker, who, body, request_url=url, base_url=base)
    else:
        raise UnsupportedMediaType(
            f"Content-Type '{content_type}' is not supported; send a Parameters resource, a manifest or {NDJSON}",
            "Content-Type")
    location = service.status_url(base, job_id)
    return accepted(request, location, f"Import job {job_id} accepted; poll {location}", rendering)


@router.get(f"/{STATUS_SEGMENT}/{{job_id}}")
def import_status(request: Request, job_id: str) -> Response:
    return status_response(service.status(request.app.state.store, caller(request), job_id, base_url(request),
                                          requires_access_token=request.app.state.settings.auth != "off"))


@router.delete(f"/{STATUS_SEGMENT}/{{job_id}}")
def import_cancel(request: Request, job_id: str) -> Response:
    service.cancel(request.app.state.store, caller(request), job_id)
    return fhir_response(request, information(f"Import job {job_id} cancelled; what it committed stays"), 202)


@router.get(f"/{STATUS_SEGMENT}/{{job_id}}/{{name}}")
def import_file(request: Request, job_id: str, name: str) -> Response:
    path, expires = service.output_file(request.app.state.store, caller(request), job_id, name)
    return FileResponse(path, media_type=NDJSON,
                        headers={"Expires": format_datetime(expires, usegmt=True)} if expires else None)
