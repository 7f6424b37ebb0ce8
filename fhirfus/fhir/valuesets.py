"""Value set expansion for the token modifiers ``:in`` and ``:not-in``.

A value set is looked up by canonical URL among the ValueSets and CodeSystems registered with
:func:`register` (fhirfus's own terminology from ``fhirfus/ig/terminology``, at start-up), then through
the caller's lookup (the ValueSets and CodeSystems stored on the server), then among the R4 value
sets of required bindings that can be enumerated (``fhirfus.fhir.bindings``). An
expansion is, per code system, a set of codes or "every code of the system" (an include of a
system whose concepts are not known here).

Supported ``compose`` rules: ``include`` of explicit concepts, of a whole system, of other value
sets (one per include, or several: their intersection), a system together with value sets
(intersection), ``exclude`` of explicit concepts; a ready ``expansion.contains``. Filters are not
supported: such a value set is refused, never expanded wrongly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fhirfus.fhir.bindings import enumerated_valueset


class ValueSetError(ValueError):
    """A value set that is unknown, or that cannot be expanded here."""


#: Per code system: the codes, or None for every code of the system.
Codes = Mapping[str, frozenset[str] | None]


@dataclass(frozen=True)
class Expansion:
    systems: Codes

    def codes(self) -> frozenset[str]:
        """Every explicitly listed code, whatever its system (for bare ``code`` elements)."""
        return frozenset().union(*(c for c in self.systems.values() if c is not None))


_registered: dict[tuple[str, str], dict] = {}
_lock = threading.Lock()


def register(resource: Mapping[str, Any]) -> None:
    """Make a ValueSet or CodeSystem resource available to expansions, by its canonical URL."""
    kind, url = resource.get("resourceType"), resource.get("url")
    if kind in ("ValueSet", "CodeSystem") and isinstance(url, str):
        copy, version = dict(resource), resource.get("version")
        with _lock:
            _registered[(kind, url)] = copy
            if isinstance(version, str):
                _registered[(kind, f"{url}|{version}")] = copy


#: A further source of ValueSets and CodeSystems: (resource type, canonical) -> resource or None.
Lookup = Callable[[str, str], "Mapping[str, Any] | None"]


def expand(url: str, lookup: Lookup | None = None) -> Expansion:
    """The codes of the value set ``url`` (``|version`` allowed); ``ValueSetError`` if it is
    unknown or uses what is not supported. ``lookup`` is asked for what is not registered (the
    ValueSets and CodeSystems stored on the server)."""

    def find(kind: str, canonical: str) -> Mapping[str, Any] | None:
        registered = _registered.get((kind, canonical))
        return registered if registered is not None or lookup is None else lookup(kind, canonical)

    return Expansion(_expand(find, url, ()))


def _expand(find: Lookup, url: str, seen: tuple[str, ...]) -> dict[str, frozenset[str] | None]:
    if url in seen:
        raise ValueSetError(f"ValueSet '{url}' includes itself")
    valueset = find("ValueSet", url)
    if valueset is None:
        enumerated = enumerated_valueset(url.partition("|")[0])
        if enumerated is None:
            raise ValueSetError(f"ValueSet '{url}' is not known to this server")
        return dict(enumerated)
    compose = valueset.get("compose")
    if not isinstance(compose, Mapping):
        contains = (valueset.get("expansion") or {}).get("contains")
        if isinstance(contains, list):
            return _contained(contains)
        raise ValueSetError(f"ValueSet '{url}' has neither compose nor expansion")
    result: dict[str, frozenset[str] | None] = {}
    for include in compose.get("include", []):
        result = _union(result, _rule(find, include, url, seen))
    for exclude in compose.get("exclude", []):
        result = _minus(result, _rule(find, exclude, url, seen), url)
    return result


def _rule(find: Lookup, rule: Mapping[str, Any], url: str, seen: tuple[str, ...]) -> dict[str, frozenset[str] | None]:
    """The codes of one include/exclude: its system part and value set parts, intersected."""
    if rule.get("filter"):
        raise ValueSetError(f"ValueSet '{url}' uses filters, which this server does not expand")
    parts: list[dict[str, frozenset[str] | None]] = []
    system = rule.get("system")
    if isinstance(system, str):
        concepts = rule.get("concept")
        if concepts:
            parts.append({system: frozenset(c["code"] for c in concepts if isinstance(c, Mapping) and "code" in c)})
        else:
            parts.append({system: _system_codes(find, system, rule.get("version"))})
    for other in rule.get("valueSet", []):
        parts.append(_expand(find, str(other), (*seen, url)))
    if not parts:
        raise ValueSetError(f"ValueSet '{url}' has an include or exclude with neither system nor valueSet")
    result = parts[0]
    for part in parts[1:]:
        result = _intersection(result, part)
    return result


def _system_codes(find: Lookup, system: str, version: Any) -> frozenset[str] | None:
    """Every code of a CodeSystem known here (hierarchies flattened); None when it is not known
    or not complete, meaning any code of the system."""
    if isinstance(version, str):
        codesystem = find("CodeSystem", f"{system}|{version}")
        if codesystem is None and find("CodeSystem", system) is not None:
            raise ValueSetError(f"CodeSystem '{system}' version '{version}' is not known to this server")
    else:
        codesystem = find("CodeSystem", system)
    if codesystem is None or codesystem.get("content") not in (None, "complete"):
        return None
    return frozenset(_concept_codes(codesystem.get("concept", [])))


def _concept_codes(concepts: Iterable[Any]) -> Iterable[str]:
    for concept in concepts:
        if isinstance(concept, Mapping):
            if isinstance(concept.get("code"), str):
                yield concept["code"]
            yield from _concept_codes(concept.get("concept", []))


def _contained(contains: Iterable[Any]) -> dict[str, frozenset[str] | None]:
    found: dict[str, set[str]] = {}
    for entry in contains:
        if not isinstance(entry, Mapping):
            continue
        if isinstance(entry.get("system"), str) and isinstance(entry.get("code"), str):
            found.setdefault(entry["system"], set()).add(entry["code"])
        for system, codes in _contained(entry.get("contains", [])).items():
            found.setdefault(system, set()).update(codes or ())
    return {system: frozenset(codes) for system, codes in found.items()}


def _union(a: Codes, b: Codes) -> dict[str, frozenset[str] | None]:
    result = dict(a)
    for system, codes in b.items():
        mine = result.get(system, frozenset())
        result[system] = None if mine is None or codes is None else mine | codes
    return result


def _intersection(a: Codes, b: Codes) -> dict[str, frozenset[str] | None]:
    result: dict[str, frozenset[str] | None] = {}
    for system in a.keys() & b.keys():
        first, second = a[system], b[system]
        result[system] = second if first is None else first if second is None else first & second
    return result


def _minus(a: Codes, b: Codes, url: str) -> dict[str, frozenset[str] | None]:
    result = dict(a)
    for system, codes in b.items():
        if system not in result:
            continue
        if result[system] is None or codes is None:
            raise ValueSetError(f"ValueSet '{url}' excludes from a whole code system, which this server cannot expand")
        result[system] = result[system] - codes  # type: ignore[operator]
    return result
