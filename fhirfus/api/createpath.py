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
from fhirfus.api.http import read_json
from fhirfus.api.negotiation import rendering_for
from fhirfus.fhir.validation import served_types

#: ``/fhir/{res_type}``: every other POST route of one segment under /fhir has a segment no served
#: type can be (``_search``, ``$validate``, ``_import``), checked by the tests.
_CREATE_PATH = re.compile(r"/fhir/([A-Za-z]+)")

Handler = Callable[[Request, Exception], Awaitable[Response]]


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
        self.fastapi_app = fastapi_app
        self._route: Any = None

    def route(self) -> Any:
        """The create route, left in the scope as routing would (the request log's template)."""
        if self._route is None:
            self._route = next(
                route for included in self.fastapi_app.routes
                for route in getattr(getattr(included, "original_router", None), "routes", ())
                if getattr(route, "endpoint", None) is resources.create)
        return self._route

    def handler(self, exc: Exception) -> Handler | None:
        """The app's handler of ``exc`` as the router's exception middleware picks it (by class,
        nearest first); None for what only the outermost one answers (a 500)."""
        handlers = self.fastapi_app.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        res_type = takes(scope)
        if res_type is None:
            await self.app(scope, receive, send)
            return
        route = self.route()
        scope.update(route=route, endpoint=route.endpoint, path_params={"res_type": res_type})
        request = Request(scope, receive)
        try:
            response = await create_response(request, res_type)
        except Exception as exc:
            handler = self.handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)
