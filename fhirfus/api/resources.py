"""Routes of the type and instance interactions: /fhir/{type}[/{id}[/_history[/{vid}]]]."""

from __future__ import annotations

from functools import partial
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from fhirfus.api import binary
from fhirfus.api.http import (
    Prefer,
    base_url,
    caller,
    fhir_response,
    projection,
    read_body,
    read_form,
    read_json,
    version_headers,
    write_response,
)
from fhirfus.api.negotiation import body_is_xml, rendering_for, require_json_body
from fhirfus.errors import InvalidRequest
from fhirfus.fhir.outcome import information, operation_outcome
from fhirfus.fhir.projection import project
from fhirfus.fhir.validation import parse_json
from fhirfus.fhir.xml import from_xml
from fhirfus.interactions import crud, history, search
from fhirfus.interactions.preconditions import not_modified_since, parse_version_tag
from fhirfus.operations import everything, extract, validate

router = APIRouter(prefix="/fhir")


def _store(request: Request):
    return request.app.state.store


def _settings(request: Request):
    return request.app.state.settings


def _integrity(request: Request) -> bool:
    """Whether writes check their references (``Settings.referential_integrity``)."""
    return bool(_settings(request).referential_integrity != "off")


def run_search(request: Request, res_type: str | None, params: list[tuple[str, str]]) -> Response:
    """Type search (``res_type``) or system search (None); shared with the system router."""
    rendering = rendering_for(request)
    settings = _settings(request)
    bundle = search.search_bundle(
        _store(request),
        caller(request),
        base_url(request),
        res_type,
        params,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
        strict=Prefer.parse(request).handling == "strict",
        raw=True,  # stored JSON goes out as it is
    )
    return fhir_response(request, bundle, rendering=rendering)


@router.get("/{res_type}")
def search_type(request: Request, res_type: str) -> Response:
    return run_search(request, res_type, list(request.query_params.multi_items()))


@router.post("/{res_type}/_search")
async def search_type_post(request: Request, res_type: str) -> Response:
    form = await read_form(request)
    params = list(request.query_params.multi_items()) + [(k, str(v)) for k, v in form.multi_items()]
    return await run_in_threadpool(run_search, request, res_type, params)


@router.post("/{res_type}")
async def create(request: Request, res_type: str) -> Response:
    rendering_for(request)
    native = binary.is_native_upload(request, res_type)
    body = await binary.native_binary(request) if native else await read_json(request)
    if_none_exist = request.headers.get("if-none-exist")
    if not if_none_exist and request.url.query and not native:
        # fhirpy sends conditional-create criteria in the query string
        if_none_exist = request.url.query
    return await create_answer(request, res_type, body, if_none_exist)


async def create_answer(request: Request, res_type: str, body: object, if_none_exist: str | None) -> Response:
    """The create of a read body and its answer: shared with the fast path (``api/createpath.py``)."""
    result = await run_in_threadpool(partial(crud.create, integrity=_integrity(request)), _store(request),
                                     caller(request), res_type, body, if_none_exist, base_url(request))
    if result.created:
        return write_response(request, result.stored, 201, f"Created {res_type}/{result.stored.res_id}")
    return write_response(request, result.stored, 200, "Resource already exists; nothing created")


@router.put("/{res_type}")
async def conditional_update(request: Request, res_type: str) -> Response:
    rendering_for(request)
    criteria = _criteria(request)
    body = await read_json(request)
    if_match = parse_version_tag(request.headers.get("if-match"))
    result = await run_in_threadpool(
        partial(crud.conditional_update, integrity=_integrity(request)), _store(request), caller(request), res_type,
        criteria, body, if_match, base_url(request),
    )
    status = 201 if result.created else 200
    return write_response(request, result.stored, status, f"{'Created' if result.created else 'Updated'} {res_type}/{result.stored.res_id}")


@router.delete("/{res_type}")
def conditional_delete(request: Request, res_type: str) -> Response:
    rendering = rendering_for(request)
    stored = crud.conditional_delete(_store(request), caller(request), res_type, _criteria(request), base_url(request),
                                     integrity=_integrity(request))
    if stored is None:
        return fhir_response(request, information("No resource matched; nothing deleted"), 200, rendering=rendering)
    headers = {"ETag": f'W/"{stored.version}"'}
    return fhir_response(request, information(f"Deleted {res_type}/{stored.res_id}"), 200, headers, rendering)


def _criteria(request: Request) -> str:
    """The search criteria of a conditional interaction: the query string minus format parameters."""
    pairs = [(k, v) for k, v in request.query_params.multi_items() if k not in ("_format", "_pretty")]
    if not pairs:
        raise InvalidRequest("A conditional interaction needs search criteria in the query string", "criteria")
    return urlencode(pairs)


@router.post("/{res_type}/$validate")
async def validate_type(request: Request, res_type: str) -> Response:
    return await run_validate(request, res_type, None)


@router.post("/{res_type}/{res_id}/$validate")
async def validate_instance(request: Request, res_type: str, res_id: str) -> Response:
    return await run_validate(request, res_type, res_id)


async def run_validate(request: Request, res_type: str | None, res_id: str | None) -> Response:
    """$validate at any level (system: ``res_type`` None); shared with the system router."""
    require_json_body(request)
    raw = await read_body(request)
    query = request.query_params
    wanted = query.get("mode") != "delete" or raw.strip()
    body = (from_xml(raw) if body_is_xml(request) else parse_json(raw)) if wanted else None
    parsed = validate.parse(body, res_type, query.get("mode"), query.get("profile"))
    issues = await run_in_threadpool(validate.validate, _store(request), caller(request), res_type, parsed, res_id)
    return fhir_response(request, operation_outcome(issues))


@router.post("/QuestionnaireResponse/$extract")
async def extract_response(request: Request) -> Response:
    rendering = rendering_for(request)
    body = await read_json(request)
    return fhir_response(request, await run_in_threadpool(extract.extract, caller(request), body), rendering=rendering)


@router.api_route("/QuestionnaireResponse/{res_id}/$extract", methods=["GET", "POST"])
def extract_stored_response(request: Request, res_id: str) -> Response:
    return fhir_response(request, extract.extract_stored(_store(request), caller(request), res_id))


@router.get("/Patient/{res_id}/$everything")
def patient_everything(request: Request, res_id: str) -> Response:
    settings = _settings(request)
    bundle = everything.everything_bundle(
        _store(request), caller(request), base_url(request), res_id, request.query_params,
        default_count=settings.default_page_size, max_count=settings.max_page_size,
    )
    return fhir_response(request, bundle)


@router.get("/{res_type}/_history")
def history_type(request: Request, res_type: str) -> Response:
    settings = _settings(request)
    bundle = history.history_bundle(
        _store(request), caller(request), base_url(request), request.query_params,
        default_count=settings.default_page_size, max_count=settings.max_page_size, res_type=res_type,
    )
    return fhir_response(request, bundle)


@router.api_route("/{res_type}/{res_id}", methods=["GET", "HEAD"])
def read(request: Request, res_type: str, res_id: str) -> Response:
    rendering = None if res_type == "Binary" else rendering_for(request)  # a Binary may answer its content
    summary, elements = projection(request)
    stored = crud.read(_store(request), caller(request), res_type, res_id)
    headers = version_headers(request, stored)
    if_none_match = parse_version_tag(request.headers.get("if-none-match"), "If-None-Match")
    if if_none_match == stored.version or (
            if_none_match is None and not_modified_since(request.headers.get("if-modified-since"), stored.last_updated)):
        return Response(status_code=304, headers=headers)
    if res_type == "Binary" and binary.wants_content(request, stored):
        return binary.content_response(request, stored, headers)
    rendering = rendering or rendering_for(request)
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers, media_type=rendering.content_type)
    content = project(stored.content, summary, elements) if stored.content and (summary or elements) else stored.content
    return fhir_response(request, content, 200, headers, rendering)


@router.put("/{res_type}/{res_id}")
async def update(request: Request, res_type: str, res_id: str) -> Response:
    rendering_for(request)
    native = binary.is_native_upload(request, res_type)
    body = await binary.native_binary(request, res_id) if native else await read_json(request)
    if_match = parse_version_tag(request.headers.get("if-match"))
    result = await run_in_threadpool(partial(crud.update, integrity=_integrity(request)), _store(request),
                                     caller(request), res_type, res_id, body, if_match, base_url(request))
    status = 201 if result.created else 200
    return write_response(request, result.stored, status, f"{'Created' if result.created else 'Updated'} {res_type}/{res_id}")


@router.patch("/{res_type}/{res_id}")
async def patch(request: Request, res_type: str, res_id: str) -> Response:
    rendering_for(request)
    operations = await read_json(request, patch=True)
    if_match = parse_version_tag(request.headers.get("if-match"))
    result = await run_in_threadpool(partial(crud.patch, integrity=_integrity(request)), _store(request),
                                     caller(request), res_type, res_id, operations, if_match, base_url(request))
    return write_response(request, result.stored, 200, f"Patched {res_type}/{res_id}")


@router.delete("/{res_type}/{res_id}")
def delete(request: Request, res_type: str, res_id: str) -> Response:
    rendering = rendering_for(request)
    stored, cascaded = crud.delete(_store(request), caller(request), res_type, res_id, base_url(request),
                                   integrity=_integrity(request), cascade=_cascade(request))
    if stored is None:
        return fhir_response(request, information(f"{res_type}/{res_id} was already deleted"), 200, rendering=rendering)
    headers = {"ETag": f'W/"{stored.version}"'}
    also = f"; cascaded to {len(cascaded)}: {', '.join(cascaded)}" if cascaded else ""
    return fhir_response(request, information(f"Deleted {res_type}/{res_id}{also}"), 200, headers, rendering)


def _cascade(request: Request) -> bool:
    """``_cascade=delete`` (HAPI FHIR's parameter) deletes what refers to the resource too."""
    value = request.query_params.get("_cascade")
    if value not in (None, "delete"):
        raise InvalidRequest(f"_cascade must be 'delete', not {value!r}", "_cascade")
    return value == "delete"


@router.get("/{res_type}/{res_id}/_history")
def history_instance(request: Request, res_type: str, res_id: str) -> Response:
    settings = _settings(request)
    bundle = history.history_bundle(
        _store(request), caller(request), base_url(request), request.query_params,
        default_count=settings.default_page_size, max_count=settings.max_page_size,
        res_type=res_type, res_id=res_id,
    )
    return fhir_response(request, bundle)


@router.get("/{res_type}/{res_id}/_history/{version_id}")
def vread(request: Request, res_type: str, res_id: str, version_id: str) -> Response:
    rendering = None if res_type == "Binary" else rendering_for(request)
    stored = crud.vread(_store(request), caller(request), res_type, res_id, version_id)
    if res_type == "Binary" and binary.wants_content(request, stored):
        return binary.content_response(request, stored, version_headers(request, stored))
    return fhir_response(request, stored.content, 200, version_headers(request, stored), rendering)
