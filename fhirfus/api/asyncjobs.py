"""The HTTP side of asynchronous jobs, once for ``$export``, ``$import`` and ``$analysis-export``:
the kick-off's ``Prefer: respond-async``, its 202 with ``Content-Location``, and the status URL's
answer (``fhirfus.bulk.status``) as a response.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhirfus.api.http import Prefer, fhir_response
from fhirfus.api.negotiation import Rendering
from fhirfus.bulk.status import StatusAnswer
from fhirfus.errors import InvalidRequest
from fhirfus.fhir.outcome import information


def prefer_tokens(request: Request) -> set[str]:
    return {
        token.strip().replace(" ", "").lower()
        for header in request.headers.getlist("prefer")
        for token in header.split(",")
    }


def require_async(request: Request, refusal: str = "An asynchronous kick-off needs the header "
                                                  "'Prefer: respond-async'") -> set[str]:
    """The Prefer tokens of a kick-off, which must ask for ``respond-async`` (400 ``refusal`` otherwise)."""
    Prefer.parse(request)  # a malformed Prefer is a 400 like everywhere else
    tokens = prefer_tokens(request)
    if "respond-async" not in tokens:
        raise InvalidRequest(refusal, "Prefer")
    return tokens


def request_url(request: Request, base: str) -> str:
    """The kick-off URL as the client sees it (the manifest's ``request``)."""
    path = request.url.path
    tail = path[len("/fhir"):] if path.startswith("/fhir") else path
    query = request.url.query
    return f"{base}{tail}" + (f"?{query}" if query else "")


def accepted(request: Request, location: str, body: dict | str, rendering: Rendering | None = None) -> Response:
    """A kick-off's answer: 202 with the status URL in ``Content-Location``; the body is a message (as
    an OperationOutcome) or the operation's own resource."""
    content = information(body) if isinstance(body, str) else body
    return fhir_response(request, content, 202, {"Content-Location": location}, rendering)


def status_response(answer: StatusAnswer) -> Response:
    """The status URL's answer: 202 without a body, or the manifest (a FHIR resource, like
    ``$viewdefinition-export``'s Parameters, as ``application/fhir+json``)."""
    if answer.manifest is None:
        return Response(status_code=answer.status, headers=answer.headers)
    media_type = "application/fhir+json" if answer.manifest.get("resourceType") else "application/json"
    return Response(orjson.dumps(answer.manifest), status_code=answer.status, media_type=media_type,
                    headers=answer.headers)
