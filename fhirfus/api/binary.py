"""Binary in its native form (R4 binary.html#rest): the bytes themselves in and out over HTTP.

A ``POST /Binary`` or ``PUT /Binary/{id}`` whose ``Content-Type`` is not a FHIR one stores the
body as a Binary (``contentType`` from the header, the bytes as ``data``, ``X-Security-Context``
as ``securityContext``); the write then goes the way of any other (validation, site label, audit,
referential integrity). A read answers the bytes with their own content type unless the client
asks for FHIR (``_format``, or an ``Accept`` that prefers a FHIR type), as HAPI does.
"""

from __future__ import annotations

import base64
import binascii
import re

from starlette.requests import Request
from starlette.responses import Response

from fhirfus.api.http import read_body
from fhirfus.api.negotiation import FHIR_JSON, JSON, media_ranges
from fhirfus.errors import InvalidRequest, InvalidResource, NotAcceptable
from fhirfus.fhir.validation import ID_PATTERN, served_types
from fhirfus.interactions.binary import security_context
from fhirfus.store.repository import Stored

SECURITY_CONTEXT_HEADER = "X-Security-Context"
#: Bodies that are a FHIR resource rather than content.
_FHIR_BODIES = {FHIR_JSON, JSON, "application/json+fhir", "text/json", "application/fhir+xml",
                "application/xml+fhir", ""}
#: Accept values that ask for the Binary resource rather than its content.
_FHIR_ANSWERS = {FHIR_JSON, JSON, "application/json+fhir", "text/json", "application/fhir+xml", "application/xml+fhir"}


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=({_TOKEN}|\"[^\"\\]*\"))*$")
_ABSOLUTE = re.compile(r"^https?://\S+$")


def _media_type(value: str) -> str:
    return value.split(";")[0].strip().lower()


def is_native_upload(request: Request, res_type: str) -> bool:
    """Whether this write carries a Binary's content rather than a FHIR resource."""
    return res_type == "Binary" and _media_type(request.headers.get("content-type", "")) not in _FHIR_BODIES


def _content_type(request: Request) -> str:
    """The upload's media type (RFC 9110 §8.3: ``type/subtype`` and parameters, no wildcard)."""
    value = request.headers["content-type"].strip()
    if not _MEDIA_TYPE.match(value) or "*" in value.split(";")[0]:
        raise InvalidRequest(f"Content-Type '{value}' is not a media type (type/subtype)", "Content-Type")
    return value


def _security_context(request: Request) -> str | None:
    """``X-Security-Context``: a literal reference, ``Type/id`` of this server or an absolute URL."""
    value = request.headers.get(SECURITY_CONTEXT_HEADER)
    if value is None:
        return None
    value = value.strip()
    res_type, _, res_id = value.partition("/")
    if not (_ABSOLUTE.match(value) or (res_type in served_types() and ID_PATTERN.match(res_id))):
        raise InvalidRequest(f"{SECURITY_CONTEXT_HEADER} '{value[:100]}' is not a reference like Patient/123",
                             SECURITY_CONTEXT_HEADER)
    return value


async def native_binary(request: Request, res_id: str | None = None) -> dict:
    """The Binary resource a native upload stands for (the body limit applies as to any body)."""
    content_type, context = _content_type(request), _security_context(request)
    raw = await read_body(request)
    resource: dict = {"resourceType": "Binary", "contentType": content_type}
    if res_id is not None:
        resource["id"] = res_id
    if context is not None:
        resource["securityContext"] = {"reference": context}
    if raw:
        resource["data"] = base64.b64encode(raw).decode("ascii")
    return resource


def _quality(ranges: list[tuple[str, float]], media: str) -> tuple[float, bool]:
    """The best quality ``Accept`` gives ``media``, and whether a range names it exactly."""
    main = media.split("/")[0]
    best, exact = 0.0, False
    for name, quality in ranges:
        if name == media:
            if quality > best or not exact:
                best, exact = max(best, quality), True
        elif name in ("*/*", f"{main}/*") and not exact:
            best = max(best, quality)
    return best, exact


def wants_content(request: Request, stored: Stored) -> bool:
    """Whether a read of the Binary ``stored`` answers its content (True) or the resource (False);
    406 when ``Accept`` allows neither."""
    if request.query_params.get("_format"):
        return False
    accept = request.headers.get("accept", "")
    if not accept.strip():
        return True
    ranges = [(name, quality) for name, quality in media_ranges(accept) if quality > 0]
    content_type = _media_type((stored.content or {}).get("contentType") or "")
    native, exact = _quality(ranges, content_type)
    fhir = max((quality for name, quality in ranges if name in _FHIR_ANSWERS), default=0.0)
    if native == 0 and fhir == 0:
        raise NotAcceptable(f"Cannot produce any of '{accept}': Binary/{stored.res_id} is {content_type} "
                            "(or application/fhir+json)", "Accept")
    return native > fhir or (native == fhir and exact)


def content_response(request: Request, stored: Stored, headers: dict[str, str]) -> Response:
    """The Binary's bytes with its own content type (and its securityContext in a header)."""
    content = stored.content or {}
    try:
        data = base64.b64decode(content.get("data") or "", validate=True)
    except (binascii.Error, ValueError) as exc:  # stored before base64 was checked strictly
        raise InvalidResource(f"Binary/{stored.res_id} holds data that is not base64", "Binary.data") from exc
    headers = {**headers, "Content-Type": str(content.get("contentType") or "application/octet-stream")}
    reference = security_context(content)
    if reference is not None:
        headers[SECURITY_CONTEXT_HEADER] = reference
    if request.method == "HEAD":
        return Response(status_code=200, headers={**headers, "Content-Length": str(len(data))})
    return Response(data, status_code=200, headers=headers)
