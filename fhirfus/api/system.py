"""System-level routes: /fhir/metadata, /fhir/_history, POST /fhir/$validate and POST /fhir (Bundles)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from fhirfus.api.http import Prefer, base_url, caller, fhir_response, read_form, read_json
from fhirfus.api.negotiation import rendering_for
from fhirfus.api.resources import run_search, run_validate
from fhirfus.errors import InvalidRequest
from fhirfus.interactions import bundles, history
from fhirfus.interactions.capabilities import capability_statement
from fhirfus.terminology.capabilities import terminology_capabilities

router = APIRouter(prefix="/fhir")


@router.get("/metadata")
def metadata(request: Request) -> Response:
    mode = request.query_params.get("mode", "full")
    if mode == "terminology":
        return fhir_response(request, terminology_capabilities(base_url(request), datetime.now(UTC)))
    if mode not in ("full", "normative"):
        raise InvalidRequest(f"mode must be full, normative or terminology, not {mode!r}", "mode")
    settings = request.app.state.settings
    return fhir_response(request, capability_statement(
        base_url(request), integrity=settings.referential_integrity != "off", cors=bool(settings.cors_origins)))


@router.get("/_history")
def history_system(request: Request) -> Response:
    settings = request.app.state.settings
    bundle = history.history_bundle(
        request.app.state.store, caller(request), base_url(request), request.query_params,
        default_count=settings.default_page_size, max_count=settings.max_page_size,
    )
    return fhir_response(request, bundle)


@router.get("")
@router.get("/")
def search_system(request: Request) -> Response:
    return run_search(request, None, list(request.query_params.multi_items()))


@router.post("/_search")
async def search_system_post(request: Request) -> Response:
    form = await read_form(request)
    params = list(request.query_params.multi_items()) + [(k, str(v)) for k, v in form.multi_items()]
    return await run_in_threadpool(run_search, request, None, params)


@router.post("/$validate")
async def validate_system(request: Request) -> Response:
    return await run_validate(request, None, None)


@router.post("")
@router.post("/")
async def bundle(request: Request) -> Response:
    rendering = rendering_for(request)
    body = await read_json(request)
    settings = request.app.state.settings
    context = bundles.Context(request.app.state.store, caller(request), base_url(request),
                              settings.default_page_size, settings.max_page_size,
                              integrity=settings.referential_integrity != "off")
    response = await run_in_threadpool(bundles.process, context, body, Prefer.parse(request).return_)
    return fhir_response(request, response, rendering=rendering)
