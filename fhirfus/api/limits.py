"""The request line: a URL longer than ``MAX_URL_LENGTH`` is answered 414, a query parameter
holding a NUL 400, before routing.

Two places see a request line. ``UrlLimit`` (ASGI middleware, in front of everything, so a long
URL costs no token check, routing or search parsing) answers what the HTTP parser could read;
``FhirHttpProtocol`` (the HTTP/1.1 protocol ``fhirfus serve`` runs uvicorn with) answers what it
could not — a URL beyond the parser's own limit, a malformed request line — with an
OperationOutcome too, instead of uvicorn's plain-text 400.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import orjson
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from fhirfus.errors import FhirError, InvalidRequest, UriTooLong
from fhirfus.fhir.outcome import operation_outcome

#: Characters of the request target: path plus query string, as sent (percent-encoded).
MAX_URL_LENGTH = 8192


def _too_long(length: int) -> UriTooLong:
    return UriTooLong(f"The URL has {length} characters or more; the limit is {MAX_URL_LENGTH} characters "
                      "(send a long search as POST [type]/_search)", "url")


def _outcome(error: FhirError) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = orjson.dumps(operation_outcome(error.issues))
    return [(b"content-type", b"application/fhir+json; charset=utf-8"),
            (b"content-length", str(len(body)).encode())], body


def url_error(raw_path: bytes, query: bytes) -> FhirError | None:
    """What is wrong with a request target, checked on the bytes as sent: too long (414), or a
    query parameter holding a NUL (400 naming it: no parameter name or value may hold one, and
    PostgreSQL text cannot store one; refused here once rather than by every route that reads
    parameters). Ids in the path are the routes' to check (the R4 id rule names the element)."""
    length = len(raw_path) + len(query)
    if length > MAX_URL_LENGTH:
        return _too_long(length)
    if b"%00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return InvalidRequest(f"The parameter {name.replace(chr(0), '%00')!r} holds a NUL character (%00)",
                                      name.replace("\x00", "") or "url")
    return None


class UrlLimit:
    """ASGI middleware answering a request target that ``url_error`` refuses, before routing."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = url_error(scope.get("raw_path") or scope.get("path", "").encode(), scope.get("query_string", b""))
            if error is not None:
                headers, body = _outcome(error)
                await send({"type": "http.response.start", "status": error.status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class FhirHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering requests it cannot parse with an OperationOutcome."""

    def send_400_response(self, msg: str) -> None:
        received = len(getattr(self, "url", b""))
        error: FhirError = _too_long(received) if received > MAX_URL_LENGTH else InvalidRequest(
            "The request is not valid HTTP/1.1 (request line or headers malformed)", "request")
        headers, body = _outcome(error)
        head = [STATUS_LINE[error.status]]
        head += [name + b": " + value + b"\r\n" for name, value in [*self.server_state.default_headers, *headers]]
        self.transport.write(b"".join([*head, b"connection: close\r\n\r\n", body]))
        self.transport.close()
