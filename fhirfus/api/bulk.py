"""Bulk Data ``$export`` routes: kick-off (system, Patient, Group), status URL, output files.

Included before the resource router: ``/fhir/_export/...`` would otherwise read as a resource
type called ``_export``. The worker pool is started and stopped with the app
(``start_exports`` / ``stop_exports``), and started on first use when an app runs without
lifespan events.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from email.utils import format_datetime
from pathlib import Path

from fastapi import APIRouter, FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from fhirfus.api.asyncjobs import accepted, request_url, require_async, status_response
from fhirfus.api.deid import policy_shaper
from fhirfus.api.http import base_url, caller, fhir_response, read_body, read_form
from fhirfus.api.negotiation import rendering_for
from fhirfus.bulk import service as bulk_export
from fhirfus.bulk import views
from fhirfus.bulk.params import parameters_resource_pairs
from fhirfus.bulk.service import STATUS_SEGMENT
from fhirfus.bulk.worker import ExportWorker
from fhirfus.errors import UnsupportedMediaType
from fhirfus.fhir.outcome import information
from fhirfus.fhir.validation import parse_json

router = APIRouter(prefix="/fhir")

NDJSON = "application/fhir+ndjson"
GZIP_LEVEL = 5
CHUNK_BYTES = 256 * 1024
_start_lock = threading.Lock()


def start_exports(app: FastAPI) -> ExportWorker:
    """The app's export worker, started once (startup hook, or lazily on the first kick-off)."""
    with _start_lock:
        worker = getattr(app.state, "bulk_exports", None)
        if worker is None:
            shaper = policy_shaper(app.state.store, app.state.settings.deid_key)
            worker = ExportWorker(app.state.store, app.state.settings, runners={views.LEVEL: views.runner(shaper)})
            worker.start()
            app.state.bulk_exports = worker
        return worker


def stop_exports(app: FastAPI) -> None:
    worker = getattr(app.state, "bulk_exports", None)
    if worker is not None:
        worker.stop()
        app.state.bulk_exports = None


@router.api_route("/$export", methods=["GET", "POST"])
async def export_system(request: Request) -> Response:
    return await _kick_off(request, "system")


@router.api_route("/Patient/$export", methods=["GET", "POST"])
async def export_patients(request: Request) -> Response:
    return await _kick_off(request, "patient")


@router.api_route("/Group/{group_id}/$export", methods=["GET", "POST"])
async def export_group(request: Request, group_id: str) -> Response:
    return await _kick_off(request, "group", group_id)


@router.get(f"/{STATUS_SEGMENT}/{{job_id}}")
def export_status(request: Request, job_id: str) -> Response:
    return status_response(bulk_export.status(request.app.state.store, caller(request), job_id, base_url(request),
                                              requires_access_token=request.app.state.settings.auth != "off"))


@router.delete(f"/{STATUS_SEGMENT}/{{job_id}}")
def export_cancel(request: Request, job_id: str) -> Response:
    bulk_export.cancel(request.app.state.store, caller(request), job_id)
    return fhir_response(request, information(f"Export job {job_id} cancelled; its files are deleted"), 202)


@router.get(f"/{STATUS_SEGMENT}/{{job_id}}/{{name}}")
def export_file(request: Request, job_id: str, name: str) -> Response:
    """An output file, gzip-compressed on the fly when the client accepts it (NDJSON shrinks ~10×)."""
    path, expires = bulk_export.output_file(request.app.state.store, caller(request), job_id, name)
    headers = {"Expires": format_datetime(expires, usegmt=True)} if expires else {}
    media_type = NDJSON if path.suffix == ".ndjson" else views.MEDIA_TYPES.get(path.suffix, NDJSON)
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        headers |= {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        return StreamingResponse(_gzipped(path), media_type=media_type, headers=headers)
    return FileResponse(path, media_type=media_type, headers=headers)


def _gzipped(path: Path) -> Iterator[bytes]:
    """The file as a gzip stream, a chunk at a time (memory stays flat whatever the file size)."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            if compressed := compressor.compress(chunk):
                yield compressed
    yield compressor.flush()


async def _kick_off(request: Request, level: str, group_id: str | None = None) -> Response:
    rendering = rendering_for(request)
    tokens = require_async(request)
    params = list(request.query_params.multi_items())
    if request.method == "POST":
        params += await _body_params(request)
    base = base_url(request)
    worker = start_exports(request.app)
    job = await run_in_threadpool(
        bulk_export.kick_off, worker, caller(request), level, params, request_url=request_url(request, base), base_url=base,
        group_id=group_id, lenient="handling=lenient" in tokens,
    )
    location = bulk_export.status_url(base, job.id)
    return accepted(request, location, f"Export job {job.id} accepted; poll {location}", rendering)


async def _body_params(request: Request) -> list[tuple[str, str]]:
    """POST kick-off: a ``Parameters`` resource (the v2 way) or an HTML form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await read_form(request)
        return [(k, str(v)) for k, v in form.multi_items()]
    raw = await read_body(request)
    if not raw.strip():
        return []
    if content_type not in ("application/fhir+json", "application/json", ""):
        raise UnsupportedMediaType(
            f"Content-Type '{content_type}' is not supported; send a Parameters resource or a form", "Content-Type"
        )
    return parameters_resource_pairs(parse_json(raw))
