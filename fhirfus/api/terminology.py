"""Terminology routes: ``$expand``, ``$validate-code``, ``$lookup``, ``$subsumes``, ``$translate`` at
type and instance level, GET (query string) or POST (``Parameters``). Included before the
resource routes: ``ValueSet/$expand`` is not a read of the id ``$expand``."""

from __future__ import annotations

from collections.abc import Callable
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


@router.api_route("/ValueSet/$expand", methods=BOTH)
async def expand(request: Request) -> Response:
    return await _answer(request, "ValueSet", terminology.expand, datetime.now(UTC))


@router.api_route("/ValueSet/{res_id}/$expand", methods=BOTH)
async def expand_instance(request: Request, res_id: str) -> Response:
    return await _answer(request, "ValueSet", terminology.expand, datetime.now(UTC), res_id)


@router.api_route("/ValueSet/$validate-code", methods=BOTH)
async def validate_valueset_code(request: Request) -> Response:
    return await _answer(request, "ValueSet", terminology.validate_valueset_code)


@router.api_route("/ValueSet/{res_id}/$validate-code", methods=BOTH)
async def validate_valueset_code_instance(request: Request, res_id: str) -> Response:
    return await _answer(request, "ValueSet", terminology.validate_valueset_code, res_id)


@router.api_route("/CodeSystem/$lookup", methods=BOTH)
async def lookup(request: Request) -> Response:
    return await _answer(request, "CodeSystem", terminology.lookup)


@router.api_route("/CodeSystem/$validate-code", methods=BOTH)
async def validate_codesystem_code(request: Request) -> Response:
    return await _answer(request, "CodeSystem", terminology.validate_codesystem_code)


@router.api_route("/CodeSystem/{res_id}/$validate-code", methods=BOTH)
async def validate_codesystem_code_instance(request: Request, res_id: str) -> Response:
    return await _answer(request, "CodeSystem", terminology.validate_codesystem_code, res_id)


@router.api_route("/CodeSystem/$subsumes", methods=BOTH)
async def subsumes(request: Request) -> Response:
    return await _answer(request, "CodeSystem", terminology.subsumes)


@router.api_route("/ConceptMap/$translate", methods=BOTH)
async def translate(request: Request) -> Response:
    return await _answer(request, "ConceptMap", terminology.translate)


@router.api_route("/ConceptMap/{res_id}/$translate", methods=BOTH)
async def translate_instance(request: Request, res_id: str) -> Response:
    return await _answer(request, "ConceptMap", terminology.translate, res_id)
