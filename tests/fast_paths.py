"""One request sent the fast way and the router's way (``api/readpath``, ``createpath``,
``searchpath``), and the answers compared without what differs between two sends (new ids,
times, freshly sealed paging cursors)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import httpx
import orjson
import pytest

_VARYING = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                      r"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"
                      r"|\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT"
                      r"|(?<=_cursor=)[^\"&<]+")


def steady(text: str) -> str:
    """``text`` with what differs between two sends of the same request blanked."""
    return _VARYING.sub("*", text)


def answer(response: httpx.Response) -> tuple[int, dict[str, str], str]:
    headers = {name: steady(value) for name, value in response.headers.items()
               if name not in ("date", "server", "content-length")}
    return response.status_code, headers, steady(response.text)


def meaning(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """``answer`` with a JSON body parsed: the stored JSON a fast read sends as it is need not be
    spaced as the route's serialiser spaces it."""
    status, headers, body = answer(response)
    try:
        return status, headers, orjson.loads(body)
    except orjson.JSONDecodeError:
        return status, headers, body


@contextmanager
def counted(monkeypatch: pytest.MonkeyPatch, fast_path: ModuleType, fast: bool) -> Iterator[list[Any]]:
    """Requests go the fast way (``fast``) or to the router; what ``fast_path.takes`` took."""
    taken: list[Any] = []
    original = fast_path.takes

    def spy(*args: Any) -> Any:
        wanted = original(*args) if fast else None
        if wanted is not None:
            taken.append(wanted)
        return wanted

    with monkeypatch.context() as patch:
        patch.setattr(fast_path, "takes", spy)
        yield taken


def both_ways(monkeypatch: pytest.MonkeyPatch, fast_path: ModuleType, send: Callable[[], httpx.Response], *,
              fast_taken: bool = True) -> tuple[httpx.Response, httpx.Response]:
    """The same request sent the fast way (taken there unless ``fast_taken`` is False) and the router's way."""
    with counted(monkeypatch, fast_path, True) as taken:
        fast = send()
    assert bool(taken) == fast_taken, taken
    with counted(monkeypatch, fast_path, False):
        routed = send()
    return fast, routed
