"""SQL on FHIR routes: ``$viewdefinition-run`` (system level, R4 mode) and ``ViewDefinition/$run``
(type and instance level, the earlier name). The rows stream in the asked format. Included before
the resource routes: ViewDefinition is not an R4 resource type."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from fhirfus.api.http import base_url, caller, read_json
from fhirfus.operations import viewdefinition
from fhirfus.operations.parameters import inputs

router = APIRouter(prefix="/fhir")
BOTH = ["GET", "POST"]


async def _run(request: Request, view_id: str | None = None) -> Response:
    who = caller(request)
    body = await read_json(request) if request.method == "POST" and (await request.body()).strip() else None
    given = inputs(request.query_params.multi_items(), body, repeated=viewdefinition.REPEATED)
    store = request.app.state.store
    run = await run_in_threadpool(viewdefinition.prepare, store, who, given, view_id)
    produced = viewdefinition.rows(store, who, run, base_url(request))
    chunks = viewdefinition.encode(run, produced)
    # the first chunk is made before the answer starts: what fails early (a view too costly to
    # evaluate, a database error) is an OperationOutcome with its status, not a broken 200 stream
    first = await run_in_threadpool(next, chunks, b"")
    return StreamingResponse(_then(first, chunks), media_type=run.media_type)


def _then(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


@router.api_route("/$viewdefinition-run", methods=BOTH)
async def viewdefinition_run(request: Request) -> Response:
    return await _run(request)


@router.api_route("/ViewDefinition/$run", methods=BOTH)
async def view_run(request: Request) -> Response:
    return await _run(request)


@router.api_route("/ViewDefinition/{view_id}/$run", methods=BOTH)
async def view_run_instance(request: Request, view_id: str) -> Response:
    return await _run(request, view_id)
