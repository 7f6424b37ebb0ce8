"""Parsing of version preconditions (``If-Match``, ``ifMatch`` in bundles)."""

from __future__ import annotations

import re

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
