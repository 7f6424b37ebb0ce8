"""The request-line limit: a URL longer than ``MAX_URL_LENGTH`` is answered 414 before routing.

Checked in front of everything else (authentication included), so a long URL costs no token
check, no routing and no search parsing; the answer is an OperationOutcome like every error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.types import Receive, Scope, Send

from fhirfus.errors import UriTooLong
from fhirfus.fhir.outcome import operation_outcome

#: Characters of the request target: path plus query string, as sent (percent-encoded).
MAX_URL_LENGTH = 8192


class UrlLimit:
    """ASGI middleware refusing request targets beyond ``MAX_URL_LENGTH`` with 414."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = len(scope.get("raw_path") or scope.get("path", "").encode()) + len(scope.get("query_string", b""))
            if length > MAX_URL_LENGTH:
                error = UriTooLong(f"The URL has {length} characters; the limit is {MAX_URL_LENGTH} characters "
                                   "(send long searches as POST [type]/_search)", "url")
                body = orjson.dumps(operation_outcome(error.issues))
                await send({"type": "http.response.start", "status": error.status, "headers": [
                    (b"content-type", b"application/fhir+json; charset=utf-8"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
