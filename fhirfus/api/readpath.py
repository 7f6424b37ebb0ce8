"""Reads by id (``GET``/``HEAD /fhir/{type}/{id}``, and vreads) answered on the event loop, ahead of routing.

The read is the most frequent request and the cheapest for the database, so what surrounds it
decides its cost: FastAPI's routing through every router, its dependency solving and the
thread-pool hop of a sync route each cost more CPU than the lookup. ``FastRead`` sits behind the
auth gate (the caller is resolved, the read is audited, rate limits apply, the request log sees
it) and answers the requests the router would hand to ``resources.read`` (or ``vread``) itself:
one regular expression, the caller's permission, one pre-compiled statement on an async connection
(``Store.async_reads``), and the stored JSON sent as it is (it already carries ``id`` and
``meta``). XML, ``_pretty``, ``_summary`` and ``_elements`` parse it to render it; conditional
reads (``If-None-Match``, ``If-Modified-Since``), HEAD and errors answer as the route does. What it does not take (Binary,
SQLite, any other path or method) goes on to the router unchanged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import psycopg
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from fhirfus.api import resources
from fhirfus.api.errors import outcome_response
from fhirfus.api.http import caller, projection, version_headers
from fhirfus.api.negotiation import rendering_for
from fhirfus.errors import FhirError, Issue
from fhirfus.fhir.projection import project
from fhirfus.fhir.validation import served_types, valid_id
from fhirfus.interactions import crud
from fhirfus.interactions.preconditions import not_modified_since, parse_version_tag

log = logging.getLogger("fhirfus.api")

#: ``/fhir/{res_type}/{res_id}``: every other route of two segments under /fhir has a segment no
#: served type or valid id can be (``$op``, ``_export``, ``_history``), checked by the tests.
_READ_PATH = re.compile(r"/fhir/([A-Za-z]+)/([^/]+)(?:/_history/([0-9]+))?")


def takes(method: str, path: str) -> tuple[str, str, str | None] | None:
    """(type, id, version or None) of a read or vread this fast path answers, None for everything else."""
    match = _READ_PATH.fullmatch(path)
    if match is None:
        return None
    res_type, res_id, version_id = match.groups()
    if method != "GET" and (method != "HEAD" or version_id is not None):
        return None  # vread is GET only (the router answers HEAD with 405)
    if res_type == "Binary" or res_type not in served_types() or not valid_id(res_id):
        return None  # Binary's content and securityContext, unknown types, bad ids: the routes' answers
    return res_type, res_id, version_id


class FastRead:
    """Pure ASGI middleware answering reads by id (see module docstring)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], fastapi_app: Any) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._routes: dict[Callable[..., Any], Any] = {}

    def route(self, endpoint: Callable[..., Any]) -> Any:
        """The route of ``endpoint``, left in the scope as routing would (the request log's template)."""
        if endpoint not in self._routes:
            self._routes[endpoint] = next(
                route for included in self.fastapi_app.routes
                for route in getattr(getattr(included, "original_router", None), "routes", ())
                if getattr(route, "endpoint", None) is endpoint)
        return self._routes[endpoint]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        store = self.fastapi_app.state.store
        wanted = takes(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if wanted is None or store.async_reads is None:
            await self.app(scope, receive, send)
            return
        res_type, res_id, version_id = wanted
        scope["route"] = self.route(resources.read if version_id is None else resources.vread)
        request = Request(scope, receive)
        try:
            if version_id is None:
                response = await read_response(request, store, res_type, res_id)
            else:
                response = await vread_response(request, store, res_type, res_id, version_id)
        except FhirError as exc:
            response = outcome_response(request, exc.status, exc.issues, exc.headers)
        except psycopg.errors.QueryCanceled:  # the statement time limit, as api/errors.py answers it
            response = outcome_response(request, 503, [Issue(
                "The request took longer than the server allows", "too-costly")], {"Retry-After": "5"})
        except psycopg.OperationalError:
            log.exception("Database error on %s %s", scope["method"], scope["path"])
            response = outcome_response(request, 503, [Issue("The database is unavailable; retry later", "transient")],
                                        {"Retry-After": "5"})
        await response(scope, receive, send)


async def read_response(request: Request, store: Any, res_type: str, res_id: str) -> Response:
    """The answer of ``resources.read`` for a type other than Binary, from ``crud.read_raw``."""
    rendering = rendering_for(request)
    summary, elements = projection(request)
    stored = await crud.read_raw(store, caller(request), res_type, res_id)
    headers = version_headers(request, stored)
    if_none_match = parse_version_tag(request.headers.get("if-none-match"), "If-None-Match")
    if if_none_match == stored.version or (
            if_none_match is None and not_modified_since(request.headers.get("if-modified-since"), stored.last_updated)):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers, media_type=rendering.content_type)
    raw = stored.raw or b"{}"
    if summary or elements:
        body = rendering.dumps(project(orjson.loads(raw), summary, elements))
    else:
        body = raw if not rendering.xml and not rendering.pretty else rendering.dumps(orjson.loads(raw))
    return Response(body, status_code=200, headers=headers, media_type=rendering.content_type)


async def vread_response(request: Request, store: Any, res_type: str, res_id: str, version_id: str) -> Response:
    """The answer of ``resources.vread`` for a type other than Binary, from ``crud.vread_raw``."""
    rendering = rendering_for(request)
    stored = await crud.vread_raw(store, caller(request), res_type, res_id, version_id)
    raw = stored.raw or b"{}"
    body = raw if not rendering.xml and not rendering.pretty else rendering.dumps(orjson.loads(raw))
    return Response(body, status_code=200, headers=version_headers(request, stored), media_type=rendering.content_type)
