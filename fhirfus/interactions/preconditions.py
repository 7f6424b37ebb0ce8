"""Parsing of version preconditions (``If-Match``, ``ifMatch`` in bundles, ``If-Modified-Since``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from fhirfus.errors import InvalidRequest

_ETAG = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


def parse_version_tag(value: str | None, header: str = "If-Match") -> int | None:
    """``W/"3"``, ``"3"`` or ``3`` → 3; None when absent; 400 when malformed."""
    if value is None or value.strip() == "":
        return None
    match = _ETAG.match(value)
    if not match:
        raise InvalidRequest(f"{header} must be a version ETag like W/\"3\", got {value!r}", header)
    return int(match.group(1))


def etag(version: int) -> str:
    return f'W/"{version}"'


def not_modified_since(value: str | None, last_updated: datetime) -> bool:
    """True when ``If-Modified-Since`` (an HTTP date) is no earlier than ``last_updated`` to the
    second (HTTP dates have no fraction): the read answers 304. A date that cannot be read is
    ignored, as RFC 9110 §13.1.3 says."""
    if not value:
        return False
    try:
        since = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return last_updated.replace(microsecond=0) <= since
