"""Opaque keyset cursors for paging links (never OFFSET: pages must not drift while data changes).

A cursor holds the position of the last row shown: its sort keys and its storage key, a counter
shared by every site. Cursors are sealed (AES-GCM) with a key of the deployment (kept in the
database, ``fhirfus.auth.signing_secret``, so every process and host opens the others'): a client
cannot read a position, so the gap between two of its own cursors tells nothing of what other
sites wrote, and an edited or forged cursor is a 400.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine

from fhirfus.auth.signing_secret import shared_secret
from fhirfus.errors import InvalidRequest
from fhirfus.store.repository import Store

CURSOR_SECRET = "paging-cursor"
_NONCE = 12
_sealers: weakref.WeakKeyDictionary[Engine, AESGCM] = weakref.WeakKeyDictionary()
_sealers_lock = threading.Lock()


def sealer(engine: Engine) -> AESGCM:
    """The deployment's cursor cipher, its key read from the database once per engine (the server
    reads it at start-up, before any request holds a transaction)."""
    found = _sealers.get(engine)
    if found is None:
        with _sealers_lock:
            found = _sealers.get(engine)
            if found is None:
                key = hashlib.sha256(shared_secret(Store(engine), CURSOR_SECRET).encode()).digest()
                found = _sealers[engine] = AESGCM(key)
    return found


def encode_cursor(engine: Engine, values: list[Any]) -> str:
    nonce = os.urandom(_NONCE)
    sealed = nonce + sealer(engine).encrypt(nonce, orjson.dumps(values), None)
    return base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def decode_cursor(engine: Engine, token: str, param: str = "_cursor") -> list[Any]:
    try:
        sealed = base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode())
        values = orjson.loads(sealer(engine).decrypt(sealed[:_NONCE], sealed[_NONCE:], None))
    except (ValueError, InvalidTag, orjson.JSONDecodeError) as exc:
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
