"""Keys a client publishes at its ``jwks_url`` (SMART Backend Services), fetched and cached.

A client rotates its keys by publishing a new JWKS; fhirfus keeps a fetched set for
``CACHE_SECONDS`` and fetches it again early, once, when an assertion names a ``kid`` the cached
set lacks. Such early fetches happen at most every ``REFETCH_SECONDS`` per URL, and a failed
fetch is remembered as long, so made-up ``kid`` values cannot turn the token endpoint into a
stream of requests to the client's server. Fetches are bounded in time and size.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import orjson

from fhirfus.auth.jwks import InvalidJwks, KeySet, published_key_set

CACHE_SECONDS = 300.0
REFETCH_SECONDS = 10.0
TIMEOUT_SECONDS = 3.0
MAX_BYTES = 64 * 1024
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class JwksUnavailable(Exception):
    """The JWKS at a client's URL could not be fetched or read (the message says why)."""


def check_jwks_url(url: str) -> str:
    """``url`` if a JWKS may be fetched from it: https, or http on the loopback interface only."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return url
    raise InvalidJwks(f"jwks_url must be an https URL (http only on the loopback interface), got {url!r}")


def fetch_jwks(url: str) -> KeySet:
    """GET the JWKS at ``url`` within ``TIMEOUT_SECONDS`` and ``MAX_BYTES``, without following redirects."""
    try:
        with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False) as http, \
                http.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise JwksUnavailable(f"{url} answered HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise JwksUnavailable(f"{url} sent more than {MAX_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise JwksUnavailable(f"{url} could not be fetched: {exc}") from exc
    try:
        return published_key_set(orjson.loads(bytes(body)))
    except (orjson.JSONDecodeError, InvalidJwks) as exc:
        raise JwksUnavailable(f"{url} did not send a JWKS: {exc}") from exc


@dataclass
class _Entry:
    fetched_at: float
    keys: KeySet | None = None
    error: str | None = None
    early_fetch_at: float = float("-inf")


class RemoteKeySets:
    """Per-process cache of fetched JWKS, by URL (thread-safe: token requests run in a thread pool)."""

    def __init__(self, fetch: Callable[[str], KeySet] = fetch_jwks, now: Callable[[], float] = time.monotonic) -> None:
        self.fetch = fetch
        self.now = now
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _lock(self, url: str) -> threading.Lock:
        """One lock per URL: a slow client server delays only the token requests of its clients."""
        with self._locks_lock:
            return self._locks.setdefault(url, threading.Lock())

    def keys(self, url: str) -> KeySet:
        """The cached keys of ``url``, fetched when missing or older than ``CACHE_SECONDS``."""
        with self._lock(url):
            entry = self._entries.get(url)
            now = self.now()
            fresh_for = CACHE_SECONDS if entry is not None and entry.error is None else REFETCH_SECONDS
            if entry is None or now - entry.fetched_at >= fresh_for:
                entry = self._fetch(url, now, entry)
            return self._answer(entry)

    def refetched(self, url: str) -> KeySet | None:
        """The keys of ``url`` fetched anew (for a ``kid`` the cache lacks), or None when an early
        fetch of it happened less than ``REFETCH_SECONDS`` ago."""
        with self._lock(url):
            now = self.now()
            entry = self._entries.get(url)
            if entry is not None and now - entry.early_fetch_at < REFETCH_SECONDS:
                return None
            entry = self._fetch(url, now, entry)
            entry.early_fetch_at = now
            return self._answer(entry)

    def _fetch(self, url: str, now: float, previous: _Entry | None) -> _Entry:
        try:
            entry = _Entry(now, keys=self.fetch(url))
        except JwksUnavailable as exc:
            entry = _Entry(now, error=str(exc))
        if previous is not None:
            entry.early_fetch_at = previous.early_fetch_at
        self._entries[url] = entry
        return entry

    @staticmethod
    def _answer(entry: _Entry) -> KeySet:
        if entry.keys is None:
            raise JwksUnavailable(entry.error or "no JWKS")
        return entry.keys
