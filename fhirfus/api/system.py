"""System-level routes: /fhir/metadata, /fhir/_history and POST /fhir (Bundles)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from starlette.concurrency import run_in_threadpool

from fhirfus.api.http import base_url, fhir_response, read_json
from fhirfus.api.resources import run_search
from fhirfus.fhir.errors import InvalidRequest, NotImplementedYet
from fhirfus.operations import history
from fhirfus.operations.capabilities import capability_statement

router = APIRouter(prefix="/fhir")


@router.get("/metadata")
def metadata(request: Request) -> Response:
    return fhir_response(request, capability_statement(base_url(request)))


@router.get("/_history")
def history_system(request: Request) -> Response:
    settings = request.app.state.settings
    bundle = history.history_bundle(
        request.app.state.store, base_url(request), request.query_params,
        default_count=settings.default_page_size, max_count=settings.max_page_size,
    )
    return fhir_response(request, bundle)


@router.get("")
@router.get("/")
def search_system(request: Request) -> Response:
    return run_search(request, None, list(request.query_params.multi_items()))


@router.post("/_search")
async def search_system_post(request: Request) -> Response:
    form = await request.form()
    params = list(request.query_params.multi_items()) + [(k, str(v)) for k, v in form.multi_items()]
    return await run_in_threadpool(run_search, request, None, params)


@router.post("")
@router.post("/")
async def bundle(request: Request) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise InvalidRequest("POST to the base URL expects a batch or transaction Bundle", "resourceType")
    raise NotImplementedYet(f"Bundle type '{body.get('type')}' is not supported yet", "Bundle.type")
