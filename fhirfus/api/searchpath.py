"""Type searches (``GET /fhir/{type}?…``) answered ahead of routing.

A selective search costs the database little; FastAPI's walk through every included router to
find the route costs about as much as building its SQL. ``FastSearch`` sits behind the auth gate,
like ``FastRead`` and ``FastCreate`` (the caller is resolved, rate limits apply, the request log
sees it under the route's template), and answers the requests the router would hand to
``resources.search_type`` with exactly what that route runs (``resources.run_search`` on a worker
thread), errors answered by the app's own exception handlers. Any other method or path goes on to
the router unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from fhirfus.api import resources
from fhirfus.api.fastpath import Bypass
from fhirfus.fhir.validation import served_types

#: ``/fhir/{res_type}``: every other GET route of one segment under /fhir has a segment no served
#: type can be (``metadata``, ``_history``), checked by the tests.
_SEARCH_PATH = re.compile(r"/fhir/([A-Za-z]+)")


def takes(scope: Scope) -> str | None:
    """The type of a search this fast path answers, None for everything else."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return None
    match = _SEARCH_PATH.fullmatch(scope["path"])
    if match is None or match.group(1) not in served_types():
        return None
    return match.group(1)


class FastSearch:
    """Pure ASGI middleware answering type searches (see module docstring)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], fastapi_app: Any) -> None:
        self.app = app
        self.bypass = Bypass(fastapi_app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        res_type = takes(scope)
        if res_type is None:
            await self.app(scope, receive, send)
            return
        route = self.bypass.route(resources.search_type)
        scope.update(route=route, endpoint=route.endpoint, path_params={"res_type": res_type})
        request = Request(scope, receive)
        try:
            response = await run_in_threadpool(
                resources.run_search, request, res_type, list(request.query_params.multi_items()))
        except Exception as exc:
            response = await self.bypass.error_response(request, exc)
        await response(scope, receive, send)
