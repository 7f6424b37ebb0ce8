"""Request and response plumbing shared by the routers: bodies, Prefer, FHIR headers, bundles."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from fhirfus.api.negotiation import Rendering, body_is_xml, rendering_for, require_json_body
from fhirfus.auth.access import DEVELOPMENT, Access
from fhirfus.errors import InvalidRequest, PayloadTooLarge, Unauthorized
from fhirfus.fhir.outcome import information, operation_outcome
from fhirfus.fhir.validation import parse_json
from fhirfus.fhir.xml import from_xml
from fhirfus.interactions.preconditions import etag
from fhirfus.store.repository import Stored

#: Where the auth gate leaves the caller of a request (``fhirfus.api.auth.AuthGate``).
ACCESS_KEY = "fhirfus.access"


def caller(request: Request) -> Access:
    """The caller of this request as the auth gate found it; ``DEVELOPMENT`` with authentication off.

    With authentication on, a request the gate did not see (a public path) has no caller: 401,
    so a route forgotten by the gate fails closed."""
    access = request.scope.get(ACCESS_KEY)
    if access is not None:
        return access
    if request.app.state.settings.auth == "off":
        return DEVELOPMENT
    raise Unauthorized("A bearer token is required", headers={"WWW-Authenticate": 'Bearer realm="fhirfus"'})


def base_url(request: Request) -> str:
    """The FHIR base URL as the client reached it (or as configured)."""
    configured = request.app.state.settings.base_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/") + "/fhir"


async def read_body(request: Request) -> bytes:
    """The raw body, refused with 413 beyond the configured limit (checked before and while reading).

    The headers that shape the answer are checked first: every write reads its body before it
    writes, and a malformed ``Prefer`` found only when the answer is made would be a 400 for a
    write that was committed."""
    Prefer.parse(request)
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request) -> FormData:
    """A form body (urlencoded or multipart): a NUL in a field's name or text is a 400 naming the
    field, as ``limits.url_error`` refuses one in the query (no FHIR string, console field or
    PostgreSQL text holds one). The one reader of forms: searches, kick-offs, the console."""
    form = await request.form()
    for name, value in form.multi_items():
        if "\x00" in name or (isinstance(value, str) and "\x00" in value):
            raise InvalidRequest(f"The form field {name.replace(chr(0), '%00')!r} holds a NUL character",
                                 name.replace("\x00", "") or "form")
    return form


async def read_json(request: Request, *, patch: bool = False) -> Any:
    """The request's resource (or JSON Patch) as JSON, from a FHIR JSON or FHIR XML body."""
    require_json_body(request, patch=patch)
    body = await read_body(request)
    return from_xml(body) if body_is_xml(request) else parse_json(body)


@dataclass(frozen=True)
class Prefer:
    """The ``Prefer`` header (RFC 7240) as FHIR uses it."""

    return_: str = "representation"
    handling: str = "lenient"
    respond_async: bool = False

    @classmethod
    def parse(cls, request: Request) -> Prefer:
        values: dict[str, str] = {}
        respond_async = False
        for header in request.headers.getlist("prefer"):
            for token in header.split(","):
                name, _, value = token.strip().partition("=")
                name = name.strip().lower()
                if name == "respond-async":
                    respond_async = True
                elif name:
                    values[name] = value.strip().strip('"')
        returns = values.get("return", "representation")
        if returns not in ("minimal", "representation", "OperationOutcome"):
            raise InvalidRequest(f"Unsupported Prefer return={returns}", "Prefer")
        return cls(returns, values.get("handling", "lenient").lower(), respond_async)


def projection(request: Request) -> tuple[str | None, tuple[str, ...]]:
    """``_summary`` and ``_elements`` of a read (``fhir.projection.project``): (None, ()) asks for
    the whole resource; ``_summary=count`` is a search's, refused here (400)."""
    if not request.scope.get("query_string"):
        return None, ()
    query = request.query_params
    summary = query.get("_summary")
    if summary is not None and summary not in ("true", "false", "data", "text"):
        raise InvalidRequest(f"_summary of a read must be true, false, data or text, got '{summary}'", "_summary")
    elements = tuple(e.strip() for e in (query.get("_elements") or "").split(",") if e.strip())
    return (None if summary in (None, "false") else summary), elements


def http_date(stored: Stored) -> str:
    return format_datetime(stored.last_updated, usegmt=True)


def version_headers(request: Request, stored: Stored, *, location: bool = False) -> dict[str, str]:
    headers = {"ETag": etag(stored.version), "Last-Modified": http_date(stored)}
    if location:
        headers["Location"] = (
            f"{base_url(request)}/{stored.res_type}/{stored.res_id}/_history/{stored.version}"
        )
    return headers


def fhir_response(
    request: Request, body: dict | None, status: int = 200, headers: dict[str, str] | None = None,
    rendering: Rendering | None = None,
) -> Response:
    rendering = rendering or rendering_for(request)
    if body is None:
        return Response(status_code=status, headers=headers)
    return Response(rendering.dumps(body), status_code=status, media_type=rendering.content_type, headers=headers)


def write_response(request: Request, stored: Stored, status: int, message: str) -> Response:
    """A create/update/patch answer shaped by ``Prefer: return=…``."""
    rendering = rendering_for(request)
    prefer = Prefer.parse(request)
    headers = version_headers(request, stored, location=True)
    if prefer.return_ == "minimal":
        return fhir_response(request, None, status, headers, rendering)
    if prefer.return_ == "OperationOutcome":
        return fhir_response(request, information(message), status, headers, rendering)
    return fhir_response(request, stored.content, status, headers, rendering)


def outcome_body(issues: list) -> dict:
    return operation_outcome(issues)
