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
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from fhirfus.api import resources
from fhirfus.api.fastpath import Bypass
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


class FastCreate:
    """Pure ASGI middleware answering plain creates (see module docstring)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], fastapi_app: Any) -> None:
        self.app = app
        self.bypass = Bypass(fastapi_app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        res_type = takes(scope)
        if res_type is None:
            await self.app(scope, receive, send)
            return
        route = self.bypass.route(resources.create)
        scope.update(route=route, endpoint=route.endpoint, path_params={"res_type": res_type})
        request = Request(scope, receive)
        try:
            response = await create_response(request, res_type)
        except Exception as exc:
            response = await self.bypass.error_response(request, exc)
        await response(scope, receive, send)
