"""Authentication at the edge: the token endpoint, SMART discovery, and the bearer-token gate.

With ``FHIRFUS_AUTH=smart`` every ``/fhir`` request except ``/fhir/metadata`` and the SMART
configuration needs a valid bearer token (401 otherwise). The gate is a plain ASGI middleware: it
resolves the caller once and leaves it in the request scope (``fhirfus.api.http.caller``), from
where the routes hand it to the operations, which check scopes (403) and read the store through
the caller's visibility (a site client's rows only). It applies a per-client rate limit (429,
``fhirfus.auth.ratelimit``) and audits every request it saw: a write's AuditEvent commits in the
write's own transaction (``fhirfus.interactions.writes``); the others are queued to the batching
audit writer.

The token endpoint takes a form no larger than ``max_body_bytes`` (read as it arrives, refused
once past the limit) from a remote address within its rate limit, and answers every refusal
with an RFC 6749 error body (``fhirfus.auth.oauth``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import replace
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fhirfus.api.http import ACCESS_KEY, base_url, fhir_response, read_body
from fhirfus.auth import oauth
from fhirfus.auth.audit import AuditRecord, RequestAudit
from fhirfus.auth.jwks import ALGORITHMS as ASSERTION_ALGORITHMS
from fhirfus.auth.oauth import OAuthError
from fhirfus.auth.ratelimit import CountsUnavailable
from fhirfus.errors import FhirError, PayloadTooLarge, TooManyRequests
from fhirfus.fhir.outcome import operation_outcome

router = APIRouter()
PUBLIC_PATHS = ("/fhir/metadata", "/fhir/.well-known/smart-configuration")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def token_url(request: Request) -> str:
    return base_url(request).removesuffix("/fhir") + "/auth/token"


@router.post("/auth/token")
async def token(request: Request) -> Response:
    state = request.app.state
    address = request.client.host if request.client else "unknown"
    try:
        wait = await run_in_threadpool(state.token_address_limit.retry_after, address)
        if wait:
            raise oauth.too_many(f"too many token requests from {address}", wait)
        oauth.check_content_type(request.headers.get("content-type"))
        try:
            body = await read_body(request)
        except PayloadTooLarge as exc:
            raise OAuthError("invalid_request", exc.message, 413) from exc
        token_request = oauth.token_request(oauth.parse_form(body),
                                            authorization_header="authorization" in request.headers)
        answer = await run_in_threadpool(state.tokens.issue, token_request, token_url(request))
    except OAuthError as exc:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())
    except CountsUnavailable:
        error = OAuthError("temporarily_unavailable", "rate-limit counts are not available", 503, retry_after=5)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers())
    return JSONResponse(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@router.get("/fhir/.well-known/smart-configuration")
def smart_configuration(request: Request) -> Response:
    return fhir_response(request, {
        "token_endpoint": token_url(request),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    })


class AuthGate:
    """ASGI middleware in front of the app (see module docstring)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], fastapi_app: Any) -> None:
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        state = self.fastapi_app.state
        if scope["type"] != "http" or state.settings.auth != "smart" or not path.startswith("/fhir") \
                or path.rstrip("/") in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization")
        status = {"code": 500}

        async def watching_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            access = state.tokens.access_for(authorization)
            wait = state.rate_limiter.retry_after(access.client_id)
            if wait:
                raise TooManyRequests(f"Rate limit exceeded for client '{access.client_id}'",
                                      headers={"Retry-After": str(wait)})
        except FhirError as exc:
            await _send_outcome(send, exc)
            state.audit.record(AuditRecord.of(None, scope, exc.status))
            return
        audit = RequestAudit(AuditRecord.of(access, scope, 0))
        scope[ACCESS_KEY] = replace(access, audit=audit)
        try:
            await self.app(scope, receive, watching_send)
        finally:
            if not audit.written:
                state.audit.record(replace(audit.record, status=status["code"]))


async def _send_outcome(send: Send, error: FhirError) -> None:
    body = orjson.dumps(operation_outcome(error.issues))
    headers = [(b"content-type", b"application/fhir+json; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
