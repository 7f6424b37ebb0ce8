"""Where CodeSystems, ValueSets and ConceptMaps come from, by canonical URL (``url`` or
``url|version``): registered ones first (tests, start-up extras), then the guide's
``terminology/`` folder, then the caller's lookup (the resources stored on the server)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import Any

from fhirfus.ig import resources_in

KINDS = ("CodeSystem", "ValueSet", "ConceptMap")

#: A source of canonical resources: (resource type, canonical) -> resource or None.
Lookup = Callable[[str, str], "Mapping[str, Any] | None"]

_registered: dict[tuple[str, str], dict] = {}
_lock = threading.Lock()


def _keys(resource: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    kind, url, version = resource.get("resourceType"), resource.get("url"), resource.get("version")
    if kind in KINDS and isinstance(url, str):
        yield str(kind), url
        if isinstance(version, str):
            yield str(kind), f"{url}|{version}"


def register(resource: Mapping[str, Any]) -> None:
    """Make a CodeSystem, ValueSet or ConceptMap available by its canonical URL."""
    copy = dict(resource)
    with _lock:
        for key in _keys(resource):
            _registered[key] = copy


@cache
def _guide() -> dict[tuple[str, str], dict]:
    found: dict[tuple[str, str], dict] = {}
    for resource in resources_in("terminology"):
        for key in _keys(resource):
            found.setdefault(key, resource)
    return found


def finder(lookup: Lookup | None = None) -> Lookup:
    """One lookup over every source, in order."""

    def find(kind: str, canonical: str) -> Mapping[str, Any] | None:
        key = (kind, canonical)
        found = _registered.get(key) or _guide().get(key)
        return found if found is not None or lookup is None else lookup(kind, canonical)

    return find


def guide_resources(kind: str) -> list[dict]:
    """The guide's resources of one kind (each once), in file order."""
    return [r for r in resources_in("terminology") if r.get("resourceType") == kind]


def registered_resources(kind: str) -> list[dict]:
    """The registered resources of one kind (each once)."""
    with _lock:
        unique = {id(r): r for (k, _), r in _registered.items() if k == kind}
    return list(unique.values())
