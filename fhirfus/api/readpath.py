"""Reads by id (``GET``/``HEAD /fhir/{type}/{id}``, and vreads) answered on the event loop, ahead of routing.

The read is the most frequent request and the cheapest for the database, so what surrounds it
decides its cost: FastAPI's routing through every router, its dependency solving and the
thread-pool hop of a sync route each cost more CPU than the lookup. ``FastRead`` sits behind the
auth gate (the caller is resolved, the read is audited, rate limits apply, the request log sees
it) and answers the requests the router would hand to ``resources.read`` (or ``vread``) itself:
one regular expression, the caller's permission, one pre-compiled statement on an async connection
(``Store.async_reads``), and the stored JSON sent as it is (it already carries ``id`` and
``meta``). XML, ``_pretty``, ``_summary`` and ``_elements`` parse it to render it; conditional
reads (``If-None-Match``, ``If-Modified-Since``), HEAD and errors answer as the route does. On
SQLite (no async driver) it runs the route's own function on a worker thread, as the router would,
sparing only the routing. What it does not take (Binary, any other path or method) goes on to the
router unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from fhirfus.api import resources
from fhirfus.api.fastpath import Bypass
from fhirfus.api.http import caller, http_date, projection, version_headers
from fhirfus.api.negotiation import rendering_of
from fhirfus.fhir.projection import project
from fhirfus.fhir.validation import served_types, valid_id
from fhirfus.interactions import crud
from fhirfus.interactions.preconditions import etag, not_modified_since, parse_version_tag

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
        self.bypass = Bypass(fastapi_app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        store = self.fastapi_app.state.store
        wanted = takes(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if wanted is None:
            await self.app(scope, receive, send)
            return
        res_type, res_id, version_id = wanted
        route = self.bypass.route(resources.read if version_id is None else resources.vread)
        scope.update(route=route, endpoint=route.endpoint)
        request = Request(scope, receive)
        response: Response | _Answer
        try:
            if store.async_reads is None:  # SQLite: the route's own read, on a worker thread as routed
                scope["path_params"] = {"res_type": res_type, "res_id": res_id} | (
                    {} if version_id is None else {"version_id": version_id})
                response = await run_in_threadpool(route.endpoint, request, **scope["path_params"])
            elif version_id is None:
                response = await read_response(request, store, res_type, res_id)
            else:
                response = await vread_response(request, store, res_type, res_id, version_id)
        except Exception as exc:
            response = await self.bypass.error_response(request, exc)
        await response(scope, receive, send)


class _Answer:
    """A 200 with the stored bytes, sent as the two ASGI messages a ``Response`` would send (without
    its header building, which costs as much as the lookup)."""

    __slots__ = ("body", "headers")

    def __init__(self, body: bytes, content_type: bytes, etag: str, last_modified: str) -> None:
        self.body = body
        self.headers = [(b"etag", etag.encode()), (b"last-modified", last_modified.encode()),
                        (b"content-length", b"%d" % len(body)), (b"content-type", content_type)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


_ASKED = (b"accept", b"if-none-match", b"if-modified-since")


def _asked(scope: Scope) -> dict[bytes, str]:
    """The request headers a read looks at, each one's first value (as ``Request.headers.get``)."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _ASKED and name not in found:
            found[name] = value.decode("latin-1")
    return found


async def read_response(request: Request, store: Any, res_type: str, res_id: str) -> Response | _Answer:
    """The answer of ``resources.read`` for a type other than Binary, from ``crud.read_raw``."""
    scope = request.scope
    query, asked = scope.get("query_string") or b"", _asked(scope)
    rendering = rendering_of(query, asked.get(b"accept", ""))
    summary, elements = projection(request) if query else (None, ())
    stored = await crud.read_raw(store, caller(request), res_type, res_id)
    if_none_match = asked.get(b"if-none-match")
    if_modified_since = asked.get(b"if-modified-since")
    if if_none_match is not None or if_modified_since is not None or request.method == "HEAD":
        headers = version_headers(request, stored)
        version = parse_version_tag(if_none_match, "If-None-Match")
        if version == stored.version or (
                version is None and not_modified_since(if_modified_since, stored.last_updated)):
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            return Response(status_code=200, headers=headers, media_type=rendering.content_type)
    raw = stored.raw or b"{}"
    if summary or elements:
        body = rendering.dumps(project(orjson.loads(raw), summary, elements))
    else:
        body = raw if not rendering.xml and not rendering.pretty else rendering.dumps(orjson.loads(raw))
    return _Answer(body, rendering.content_type.encode(), etag(stored.version), http_date(stored))


async def vread_response(request: Request, store: Any, res_type: str, res_id: str, version_id: str) -> _Answer:
    """The answer of ``resources.vread`` for a type other than Binary, from ``crud.vread_raw``."""
    rendering = rendering_of(request.scope.get("query_string") or b"", _asked(request.scope).get(b"accept", ""))
    stored = await crud.vread_raw(store, caller(request), res_type, res_id, version_id)
    raw = stored.raw or b"{}"
    body = raw if not rendering.xml and not rendering.pretty else rendering.dumps(orjson.loads(raw))
    return _Answer(body, rendering.content_type.encode(), etag(stored.version), http_date(stored))
