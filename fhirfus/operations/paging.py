"""Opaque keyset cursors for paging links (never OFFSET: pages must not drift while data changes)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
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
