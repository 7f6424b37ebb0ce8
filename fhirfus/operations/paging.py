"""Opaque keyset cursors for paging links (never OFFSET: pages must not drift while data changes)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import orjson

from fhirfus.fhir.errors import InvalidRequest


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(token: str, param: str = "_cursor") -> list[Any]:
    try:
        padded = token + "=" * (-len(token) % 4)
        values = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidRequest(f"Invalid paging cursor '{token}'", param) from exc
    if not isinstance(values, list):
        raise InvalidRequest(f"Invalid paging cursor '{token}'", param)
    return values


#: Bounds of a key a cursor may carry: what both databases can compare without an error.
_INT_RANGE = (-(2 ** 63), 2 ** 63 - 1)
_MAX_TEXT = 1024


def fits(value: Any, kind: type) -> bool:
    """Whether a decoded cursor value is of ``kind`` and within what the database can compare
    (a forged cursor is a 400, never a database error)."""
    if kind is int:
        return type(value) is int and _INT_RANGE[0] <= value <= _INT_RANGE[1]
    if kind is Decimal:
        return isinstance(value, Decimal) and value.is_finite() and -100 < value.adjusted() < 100
    if kind is str:
        return isinstance(value, str) and len(value) <= _MAX_TEXT and "\x00" not in value
    return isinstance(value, kind) and not isinstance(value, bool)


def page_size(raw: str | None, default: int, maximum: int, param: str = "_count") -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidRequest(f"{param} must be a non-negative integer, got '{raw}'", param) from exc
    if value < 0:
        raise InvalidRequest(f"{param} must be a non-negative integer, got '{raw}'", param)
    return min(value, maximum)


def page_url(path: str, params: Iterable[tuple[str, str]] | Mapping[str, str]) -> str:
    """``path?query`` for a Bundle link (repeated pairs kept once, order kept)."""
    pairs = list(dict.fromkeys(params.items() if isinstance(params, Mapping) else params))
    return f"{path}?{urlencode(pairs)}" if pairs else path
