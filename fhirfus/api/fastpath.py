"""What the fast paths (``readpath.FastRead``, ``createpath.FastCreate``) share with the router they
go around: the route they leave in the scope, and the app's own exception handlers.

A request a fast path answers must look to everything after it exactly as if the router had
answered it: the request log reads the route's template from the scope, and an error becomes the
OperationOutcome ``errors.install_error_handlers`` makes of it, not a fast path's own version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Handler = Callable[[Request, Exception], Awaitable[Response]]


class Bypass:
    """The route and error lookups of one FastAPI app, each found once."""

    def __init__(self, fastapi_app: Any) -> None:
        self.fastapi_app = fastapi_app
        self._routes: dict[Callable[..., Any], Any] = {}
        self._handlers: dict[type, Handler | None] = {}

    def route(self, endpoint: Callable[..., Any]) -> Any:
        """The route of ``endpoint``, to be left in the scope as routing would."""
        if endpoint not in self._routes:
            self._routes[endpoint] = next(
                route for included in self.fastapi_app.routes
                for route in getattr(getattr(included, "original_router", None), "routes", ())
                if getattr(route, "endpoint", None) is endpoint)
        return self._routes[endpoint]

    def handler(self, exc: Exception) -> Handler | None:
        """The app's handler of ``exc`` as the router's exception middleware picks it (by class,
        nearest first); None for what only the outermost one answers (a 500, logged there)."""
        kind = type(exc)
        if kind not in self._handlers:
            handlers = self.fastapi_app.exception_handlers
            self._handlers[kind] = next(
                (handlers[cls] for cls in kind.__mro__ if cls is not Exception and cls in handlers), None)
        return self._handlers[kind]

    async def error_response(self, request: Request, exc: Exception) -> Response:
        """The app's answer to ``exc``; re-raised when only the outermost handler answers it."""
        handler = self.handler(exc)
        if handler is None:
            raise exc
        return await handler(request, exc)


class TypeRoute:
    """Pure ASGI middleware answering one route of ``/fhir/{res_type}`` ahead of routing: the
    requests ``wanted`` picks are answered by ``answer`` with the route of ``endpoint`` left in the
    scope, errors by the app's handlers; every other request goes on to the router unchanged."""

    endpoint: Callable[..., Any]

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], fastapi_app: Any) -> None:
        self.app = app
        self.bypass = Bypass(fastapi_app)

    def wanted(self, scope: Scope) -> str | None:
        """The resource type of a request this path answers, None for everything else."""
        raise NotImplementedError

    async def answer(self, request: Request, res_type: str) -> Response:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        res_type = self.wanted(scope)
        if res_type is None:
            await self.app(scope, receive, send)
            return
        route = self.bypass.route(type(self).endpoint)
        scope.update(route=route, endpoint=route.endpoint, path_params={"res_type": res_type})
        request = Request(scope, receive)
        try:
            response = await self.answer(request, res_type)
        except Exception as exc:
            response = await self.bypass.error_response(request, exc)
        await response(scope, receive, send)
