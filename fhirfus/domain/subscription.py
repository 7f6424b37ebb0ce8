"""What a Subscription must say for fhirfus to honour it, checked on every write of one.

fhirfus delivers R4 ``rest-hook`` Subscriptions (``fhirfus.subscriptions``); one it could not
deliver is refused here (422 naming the element) instead of being stored and never firing:

- ``channel.type`` is ``rest-hook`` and ``channel.endpoint`` an absolute http(s) URL;
- ``criteria`` is a search of a served type (``Observation?code=…``, or a bare type for every
  write of it), parsed by the search engine in strict mode (an unknown parameter is refused, as a
  silently ignored one would widen the match), without result parameters (``_count``, ``_sort``,
  ``_include`` …: a notification is one resource), and the writer may search every type it reads;
- ``channel.payload`` is absent (a notification without body) or ``application/fhir+json``, with
  the R4B backport's ``backport-payload-content`` extension choosing ``id-only`` or
  ``full-resource`` (the default) — XML payloads are not offered;
- every ``channel.header`` is ``Name: value`` (printable ASCII: a value the HTTP client cannot send
  would fail every delivery) and names no header the server sets itself.

The server owns ``status`` (R4: it moves ``requested`` to ``active`` once it accepted the
Subscription; ``off`` stays off; ``error`` is the server's to set) and ``error``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fhirfus.addresses import http_url
from fhirfus.errors import BusinessRuleViolation, FhirError
from fhirfus.fhir.validation import served_types
from fhirfus.search.query import RESULT_PARAMETERS, SearchQuery, criteria_types, parse_query

PAYLOAD_CONTENT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content"
JSON = "application/fhir+json"
#: Payload modes: no body, the resource's id and version only, the whole resource.
NONE, ID_ONLY, FULL = "none", "id-only", "full-resource"
#: Headers of a notification that the server sets (a channel.header may not replace them).
RESERVED_HEADERS = frozenset({"host", "content-type", "content-length", "transfer-encoding", "connection",
                              "x-fhirfus-signature", "x-fhirfus-subscription"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: What an HTTP client can send as a header value: visible ASCII, spaces and tabs (no control
#: character, no line break, nothing beyond ASCII, which the delivery's client cannot encode).
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


@dataclass(frozen=True)
class Channel:
    """Where and how notifications of one Subscription go."""

    endpoint: str
    payload: str
    headers: tuple[tuple[str, str], ...]


def _refuse(message: str, element: str) -> BusinessRuleViolation:
    return BusinessRuleViolation(message, f"Subscription.{element}")


def parse_criteria(criteria: object) -> SearchQuery:
    """``Type?name=value&…`` as the search engine's query (422 naming ``Subscription.criteria``)."""
    if not isinstance(criteria, str) or not criteria.strip():
        raise _refuse("A Subscription needs criteria: a search such as 'Observation?code=…'", "criteria")
    res_type, _, query = criteria.strip().partition("?")
    if res_type not in served_types():
        raise _refuse(f"criteria '{criteria}' names no resource type this server serves ('{res_type}')", "criteria")
    pairs = parse_qsl(query, keep_blank_values=True)
    for name, _value in pairs:
        if name.partition(":")[0] in RESULT_PARAMETERS or name in ("_format", "_pretty"):
            raise _refuse(f"criteria may not use the result parameter '{name}' (a notification is one resource)",
                          "criteria")
    try:
        return parse_query(res_type, pairs, strict=True)
    except FhirError as exc:
        raise _refuse(f"criteria '{criteria}' are not a search this server answers: {exc.message}",
                      "criteria") from exc


def channel_of(resource: dict) -> Channel:
    """The channel of a Subscription, checked (422 naming the element)."""
    channel = resource.get("channel")
    if not isinstance(channel, dict):
        raise _refuse("A Subscription needs a channel", "channel")
    if channel.get("type") != "rest-hook":
        raise _refuse(f"channel.type '{channel.get('type')}' is not delivered by this server (only rest-hook)",
                      "channel.type")
    endpoint = channel.get("endpoint")
    endpoint = endpoint if isinstance(endpoint, str) else ""
    try:
        http_url(endpoint)
    except ValueError as exc:
        raise _refuse(f"channel.endpoint must be an absolute http(s) URL: {exc}", "channel.endpoint") from exc
    payload = NONE
    if "payload" in channel or "_payload" in channel:
        if channel.get("payload") != JSON:
            raise _refuse(f"channel.payload '{channel.get('payload')}' is not offered (only {JSON}, or no payload)",
                          "channel.payload")
        payload = FULL
        for extension in (channel.get("_payload") or {}).get("extension") or []:
            if isinstance(extension, dict) and extension.get("url") == PAYLOAD_CONTENT:
                content = extension.get("valueCode")
                if content not in ("empty", ID_ONLY, FULL):
                    raise _refuse(f"payload content '{content}' is none of empty, id-only, full-resource",
                                  "channel.payload")
                payload = NONE if content == "empty" else content
    headers = []
    for index, header in enumerate(channel.get("header") or []):
        name, colon, value = header.partition(":") if isinstance(header, str) else ("", "", "")
        if not colon or not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
            raise _refuse(f"channel.header[{index}] must read 'Name: value' (the value printable ASCII)",
                          f"channel.header[{index}]")
        if name.lower() in RESERVED_HEADERS:
            raise _refuse(f"channel.header[{index}] may not set {name} (the server sets it)", f"channel.header[{index}]")
        headers.append((name, value.strip()))
    return Channel(endpoint, payload, tuple(headers))


def accept(resource: dict, may_search: Callable[[str], bool]) -> dict:
    """A Subscription the server will honour, with the ``status`` the server gives it (``active``,
    or ``off`` when the writer turned it off); 422 for one it would not deliver. ``may_search``:
    whether the writer may search a type (its criteria are a standing search)."""
    query = parse_criteria(resource.get("criteria"))
    for res_type in (query.res_type, *sorted(criteria_types(query))):
        if not may_search(res_type):
            raise _refuse(f"criteria read {res_type}, which the writer may not search", "criteria")
    channel_of(resource)
    status = resource.get("status")
    if status not in ("requested", "active", "off"):
        raise _refuse(f"status '{status}' cannot be asked for (requested or off; the server sets active and error)",
                      "status")
    accepted = {key: value for key, value in resource.items() if key not in ("error", "_error")}
    accepted["status"] = "off" if status == "off" else "active"
    return accepted
