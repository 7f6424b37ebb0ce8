"""One log line per request: method, route template, status, milliseconds, client.

An operator sees what the server is doing without reading patient data: the route template
(``/fhir/{res_type}/{res_id}``), never the path itself, its ids or its query values.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhirfus.api.http import ACCESS_KEY

LOG = logging.getLogger("fhirfus.requests")


class RequestLog:
    """Pure ASGI middleware (it does not buffer streamed responses)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            LOG.info("%s %s %d %.1f ms client=%s", scope["method"], route_template(scope), status,
                     (time.perf_counter() - started) * 1000, client_of(scope))


def route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else "(no route)"


def client_of(scope: Scope) -> str:
    access = scope.get(ACCESS_KEY)
    return str(getattr(access, "client_id", None) or "-")
