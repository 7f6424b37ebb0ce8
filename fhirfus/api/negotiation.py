"""Content negotiation: JSON or XML to answer with, and which request bodies to accept.

JSON is the default; FHIR XML (``application/fhir+xml``, ``_format=xml``) is written from the JSON
and read into it (``fhir.xml``), for every interaction and operation that carries resources.
``_format`` overrides ``Accept`` (as the spec says); a client that accepts neither gets 406, a
body that is neither gets 415.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import Request

from fhirfus.errors import NotAcceptable, UnsupportedMediaType
from fhirfus.fhir.xml import to_xml

FHIR_JSON = "application/fhir+json"
JSON = "application/json"
JSON_PATCH = "application/json-patch+json"
FHIR_XML = "application/fhir+xml"
XML = "application/xml"
XML_TYPES = frozenset({FHIR_XML, XML, "text/xml", "application/xml+fhir"})

_FORMAT_ALIASES = {
    "json": FHIR_JSON,
    "application/json": JSON,
    "application/fhir+json": FHIR_JSON,
    "application/json+fhir": FHIR_JSON,
    "text/json": JSON,
    "xml": FHIR_XML,
    "application/fhir+xml": FHIR_XML,
    "application/xml+fhir": FHIR_XML,
    "application/xml": XML,
    "text/xml": XML,
}
_JSON_LIKE = {FHIR_JSON, JSON, "application/json+fhir", "text/json", "application/*", "*/*", "text/*"}
_ANSWERABLE = _JSON_LIKE | XML_TYPES


@dataclass(frozen=True)
class Rendering:
    """How to write the response body."""

    media_type: str = FHIR_JSON
    pretty: bool = False

    @property
    def xml(self) -> bool:
        return self.media_type in XML_TYPES

    def dumps(self, body: dict) -> bytes:
        if self.xml:  # stored JSON inside the body (``orjson.Fragment``) is parsed to be written as XML
            return to_xml(orjson.loads(orjson.dumps(body)))
        if not self.pretty:
            return orjson.dumps(body)
        # stored JSON inside the body (``orjson.Fragment``) is written as it is: parse it to indent it
        return orjson.dumps(orjson.loads(orjson.dumps(body)), option=orjson.OPT_INDENT_2)

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; charset=utf-8"


def media_ranges(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        if not fields[0]:
            continue
        quality = 1.0
        for param in fields[1:]:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        ranges.append((fields[0].lower(), quality))
    return ranges


def rendering_for(request: Request) -> Rendering:
    """Decide the response format from ``_format``, ``Accept`` and ``_pretty``."""
    return _rendering(request.scope.get("query_string", b""), request.headers.get("accept", ""))


def rendering_of(query_string: bytes, accept: str) -> Rendering:
    """``rendering_for`` of a raw query string and ``Accept`` header (a path that keeps no ``Request``)."""
    return _rendering(query_string, accept)


@lru_cache(maxsize=512)
def _rendering(query_string: bytes, accept: str) -> Rendering:
    """``rendering_for`` of a query string and Accept header: clients send the same few again and
    again, so each pair is decided once (a refusal is not cached: it raises)."""
    query = QueryParams(query_string)
    pretty = query.get("_pretty", "false").lower() == "true"
    requested = query.get("_format")
    if requested:
        media = _FORMAT_ALIASES.get(requested.strip().lower().split(";")[0].replace(" ", "+"))
        if media is None:
            raise NotAcceptable(f"_format '{requested}' is not supported; fhirfus serves JSON and XML", "_format")
        return Rendering(media, pretty)
    if not accept.strip():
        return Rendering(FHIR_JSON, pretty)
    acceptable = [(media, q) for media, q in media_ranges(accept) if q > 0 and media in _ANSWERABLE]
    if not acceptable:
        raise NotAcceptable(f"Cannot produce any of '{accept}'; fhirfus serves application/fhir+json and "
                            "application/fhir+xml", "Accept")
    best = max(acceptable, key=lambda item: (item[1], item[0] in XML_TYPES or item[0] in (FHIR_JSON, JSON)))[0]
    if best in XML_TYPES:
        return Rendering(FHIR_XML if best != XML and best != "text/xml" else XML, pretty)
    return Rendering(JSON if best in (JSON, "text/json") else FHIR_JSON, pretty)


def safe_rendering_for(request: Request) -> Rendering:
    """Like ``rendering_for`` but never fails: errors must still be rendered somehow."""
    try:
        return rendering_for(request)
    except NotAcceptable:
        return Rendering(FHIR_JSON, False)


def body_is_xml(request: Request) -> bool:
    """Whether the request body is declared as (FHIR) XML."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower() in XML_TYPES


def require_json_body(request: Request, *, patch: bool = False) -> None:
    """415 unless the body is declared as FHIR JSON or XML (or plain JSON; JSON Patch for PATCH)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    allowed = {FHIR_JSON, JSON, "application/json+fhir", "text/json", "", *XML_TYPES}
    if patch:
        allowed = allowed | {JSON_PATCH}
    if content_type not in allowed:
        kind = "JSON Patch, FHIR JSON or FHIR XML" if patch else "FHIR JSON or FHIR XML"
        raise UnsupportedMediaType(f"Content-Type '{content_type}' is not supported; send {kind}", "Content-Type")
