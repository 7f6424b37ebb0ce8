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

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from fhirfus.api import resources
from fhirfus.api.fastpath import TypeRoute
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


class FastSearch(TypeRoute):
    """Pure ASGI middleware answering type searches (see module docstring)."""

    endpoint = staticmethod(resources.search_type)

    def wanted(self, scope: Scope) -> str | None:
        return takes(scope)

    async def answer(self, request: Request, res_type: str) -> Response:
        return await run_in_threadpool(resources.run_search, request, res_type, list(request.query_params.multi_items()))
