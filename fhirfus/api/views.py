"""SQL on FHIR routes: ``$viewdefinition-run`` (system level, R4 mode) and ``ViewDefinition/$run``
(type and instance level, the earlier name), and the asynchronous ``$viewdefinition-export``
(system and type level; its status URL and files are the Bulk Data export's, ``api.bulk``). The
rows stream in the asked format; an analyst's go through the de-identification policy it names
(``policy``, default ``safe-harbor``). Included before the resource routes: ViewDefinition is not
an R4 resource type."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from fhirfus.api.asyncjobs import accepted, request_url, require_async
from fhirfus.api.bulk import start_exports
from fhirfus.api.deid import policy_shaper
from fhirfus.api.http import base_url, caller, read_json
from fhirfus.bulk import views
from fhirfus.bulk.service import status_url
from fhirfus.interactions import viewdefinition
from fhirfus.operations.parameters import inputs

router = APIRouter(prefix="/fhir")
#: Names the policy a de-identified run went through, and its hash (as the analysis export's manifest does).
POLICY_HEADER = "X-Deidentification-Policy"
BOTH = ["GET", "POST"]


async def _run(request: Request, view_id: str | None = None) -> Response:
    who = caller(request)
    body = await read_json(request) if request.method == "POST" and (await request.body()).strip() else None
    given = inputs(request.query_params.multi_items(), body, repeated=viewdefinition.REPEATED)
    store = request.app.state.store
    analyst = who.role == "analyst"
    run = await run_in_threadpool(viewdefinition.prepare, store, who, given, view_id, deidentified=analyst)
    produced = viewdefinition.rows(store, who, run, base_url(request))
    headers = {}
    if analyst or given.get("policy") is not None:  # an analyst always, anybody who asks for it
        shaper = policy_shaper(store, request.app.state.settings.deid_key)
        policy = await run_in_threadpool(shaper, run, _policy(given))
        run = replace(run, released=policy.released)
        produced = policy.apply(produced)
        headers[POLICY_HEADER] = f"{policy.policy_name}; sha256={policy.policy_sha256}"
    chunks = viewdefinition.encode(run, produced)
    # the first chunk is made before the answer starts: what fails early (a view too costly to
    # evaluate, a database error) is an OperationOutcome with its status, not a broken 200 stream
    first = await run_in_threadpool(next, chunks, b"")
    return StreamingResponse(_then(first, chunks), media_type=run.media_type, headers=headers)


def _policy(given: dict) -> str | None:
    value = given.get("policy")
    return None if value is None else str(value)


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


@router.api_route("/$viewdefinition-export", methods=["POST"])
async def viewdefinition_export(request: Request) -> Response:
    return await _export(request)


@router.api_route("/ViewDefinition/$viewdefinition-export", methods=["POST"])
async def view_export(request: Request) -> Response:
    return await _export(request)


async def _export(request: Request) -> Response:
    """Kick-off: 202, ``Content-Location`` = the status URL, the operation's Parameters as the body."""
    require_async(request)
    who = caller(request)
    body = await read_json(request) if (await request.body()).strip() else None
    parts, rest = views.view_parts(body)
    given = inputs(request.query_params.multi_items(), rest, repeated=viewdefinition.REPEATED)
    store = request.app.state.store
    base = base_url(request)
    worker = start_exports(request.app)
    job = await run_in_threadpool(
        views.kick_off, worker, who, parts, given, request_url=request_url(request, base), base_url=base,
        shaper=policy_shaper(store, request.app.state.settings.deid_key))
    location = status_url(base, job.id)
    return accepted(request, location, views.accepted(job, location))
