"""Plain creates (``POST /fhir/{type}``) answered ahead of routing.

A create's own work (validation, the write) is what it should cost; FastAPI's walk through every
included router to find the route, and its request handler around the endpoint, cost as much as
the validation. ``FastCreate`` sits behind the auth gate, like ``FastRead`` (the caller is resolved,
the write audited in its transaction, rate limits apply, the request log sees it under the route's
template), and answers the requests the router would hand to ``resources.create`` with exactly
what that route runs (``read_json`` then ``resources.create_answer``), errors turned into
OperationOutcome by the app's own exception handlers. It takes only the plain case: no query
string (``_format``, fhirpy's conditional criteria), no ``If-None-Exist``, not Binary (whose
native upload is the route's); everything else goes on to the router unchanged.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from fhirfus.api import resources
from fhirfus.api.fastpath import TypeRoute
from fhirfus.api.http import read_json
from fhirfus.api.negotiation import rendering_for
from fhirfus.fhir.validation import served_types

#: ``/fhir/{res_type}``: every other POST route of one segment under /fhir has a segment no served
#: type can be (``_search``, ``$validate``, ``_import``), checked by the tests.
_CREATE_PATH = re.compile(r"/fhir/([A-Za-z]+)")

def takes(scope: Scope) -> str | None:
    """The type of a plain create this fast path answers, None for everything else."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("query_string"):
        return None
    match = _CREATE_PATH.fullmatch(scope["path"])
    if match is None:
        return None
    res_type = match.group(1)
    if res_type == "Binary" or res_type not in served_types():
        return None  # Binary's native upload, unknown types: the route's answers
    if any(name == b"if-none-exist" for name, _ in scope["headers"]):
        return None  # a conditional create
    return res_type


async def create_response(request: Request, res_type: str) -> Response:
    """What ``resources.create`` answers to a plain create."""
    rendering_for(request)
    body = await read_json(request)
    return await resources.create_answer(request, res_type, body, None)


class FastCreate(TypeRoute):
    """Pure ASGI middleware answering plain creates (see module docstring)."""

    endpoint = staticmethod(resources.create)

    def wanted(self, scope: Scope) -> str | None:
        return takes(scope)

    async def answer(self, request: Request, res_type: str) -> Response:
        return await create_response(request, res_type)
