"""Terminology routes: ``$expand``, ``$validate-code``, ``$lookup``, ``$subsumes``, ``$translate`` at
type and instance level, GET (query string) or POST (``Parameters``). Included before the
resource routes: ``ValueSet/$expand`` is not a read of the id ``$expand``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from fhirfus.api.http import caller, fhir_response, read_json
from fhirfus.operations import terminology
from fhirfus.operations.parameters import inputs

router = APIRouter(prefix="/fhir")
BOTH = ["GET", "POST"]


async def _answer(request: Request, kind: str, operation: Callable[..., dict], *args: Any) -> Response:
    """Permission first (whatever the body), then the inputs of the query string and a POSTed
    Parameters body (an empty POST body is no body)."""
    who = caller(request)
    who.require(kind, "r")
    body = await read_json(request) if request.method == "POST" and (await request.body()).strip() else None
    given = inputs(request.query_params.multi_items(), body)
    result = await run_in_threadpool(operation, request.app.state.store, who, given, *args)
    return fhir_response(request, result)


#: (type, operation, what runs it, whether it has an instance form, whether it is given the clock)
OPERATIONS: tuple[tuple[str, str, Callable[..., dict], bool, bool], ...] = (
    ("ValueSet", "$expand", terminology.expand, True, True),
    ("ValueSet", "$validate-code", terminology.validate_valueset_code, True, False),
    ("CodeSystem", "$lookup", terminology.lookup, False, False),
    ("CodeSystem", "$validate-code", terminology.validate_codesystem_code, True, False),
    ("CodeSystem", "$subsumes", terminology.subsumes, False, False),
    ("ConceptMap", "$translate", terminology.translate, True, False),
)


def _route(kind: str, run: Callable[..., dict], clock: bool) -> Callable[[Request], Awaitable[Response]]:
    async def answer(request: Request) -> Response:
        res_id = request.path_params.get("res_id")
        args = ([datetime.now(UTC)] if clock else []) + ([res_id] if res_id is not None else [])
        return await _answer(request, kind, run, *args)

    return answer


for _kind, _name, _run, _instance, _clock in OPERATIONS:
    router.add_api_route(f"/{_kind}/{_name}", _route(_kind, _run, _clock), methods=BOTH)
    if _instance:
        router.add_api_route(f"/{_kind}/{{res_id}}/{_name}", _route(_kind, _run, _clock), methods=BOTH)
