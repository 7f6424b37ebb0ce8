"""Value set expansion: the codes per system (the token modifiers ``:in`` and ``:not-in``).

A value set is looked up by canonical URL through ``sources`` (registered, the guide's, then the
caller's lookup: the ValueSets and CodeSystems stored on the server), then among the R4 value
sets of required bindings that can be enumerated (``fhirfus.fhir.bindings``). An
expansion is, per code system, a set of codes or "every code of the system" (an include of a
system whose concepts are not known here).

Supported ``compose`` rules: ``include`` of explicit concepts, of a whole system, of other value
sets (one per include, or several: their intersection), a system together with value sets
(intersection), ``exclude`` of explicit concepts; a ready ``expansion.contains``. Filters are not
supported: such a value set is refused, never expanded wrongly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fhirfus.fhir.bindings import enumerated_valueset
from fhirfus.terminology.sources import Lookup, finder, register

__all__ = ["Codes", "Expansion", "Lookup", "ValueSetError", "expand", "register"]


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


def expand(url: str, lookup: Lookup | None = None) -> Expansion:
    """The codes of the value set ``url`` (``|version`` allowed); ``ValueSetError`` if it is
    unknown or uses what is not supported. ``lookup`` is asked for what is neither registered nor
    in the guide (the ValueSets and CodeSystems stored on the server)."""
    return Expansion(_expand(finder(lookup), url, ()))


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


class UnknownValueSet(ValueSetError):
    """The canonical names no value set known here (404 rather than 400)."""


@dataclass(frozen=True)
class Concept:
    """One concept of an expansion."""

    system: str
    code: str
    display: str | None = None


def concepts(url: str, lookup: Lookup | None = None, *, language: str | None = None) -> list[Concept]:
    """The concepts of the value set ``url`` in a stable order (each code system's own order, then
    by code), with their displays (in ``language`` where a designation gives one). A value set that
    includes every code of a system whose content is not known here cannot be listed."""
    find = finder(lookup)
    if find("ValueSet", url) is None and enumerated_valueset(url.partition("|")[0]) is None:
        raise UnknownValueSet(f"ValueSet '{url}' is not known to this server")
    codes = _expand(find, url, ())
    for system, listed in codes.items():
        if listed is None:
            raise ValueSetError(f"ValueSet '{url}' includes every code of {system}, whose codes this server does "
                                "not know: it cannot be listed")
    names = _displays(find, url, language, ())
    found: list[Concept] = []
    for system, listed in codes.items():
        order = _system_order(find, system)
        for code in sorted(listed or (), key=lambda c: (order.get(c, len(order)), c)):
            found.append(Concept(system, code, names.get((system, code))))
    return found


def matching(found: Iterable[Concept], text: str) -> list[Concept]:
    """The concepts whose code or display contains every word of ``text`` (case-insensitive), as
    ``$expand``'s ``filter`` asks."""
    words = text.lower().split()
    return [c for c in found if all(w in f"{c.code} {c.display or ''}".lower() for w in words)]


def display_of(concept: Mapping[str, Any], language: str | None) -> str | None:
    """A concept's display, or its designation in ``language`` when there is one."""
    if language:
        for designation in concept.get("designation") or ():
            if isinstance(designation, Mapping) and str(designation.get("language", "")).lower().startswith(
                    language.lower()) and isinstance(designation.get("value"), str):
                return str(designation["value"])
    display = concept.get("display")
    return display if isinstance(display, str) else None


def _system_order(find: Lookup, system: str) -> dict[str, int]:
    codesystem = find("CodeSystem", system)
    codes = list(_concept_codes(codesystem.get("concept", []))) if codesystem else []
    return {code: index for index, code in enumerate(codes)}


def _displays(find: Lookup, url: str, language: str | None, seen: tuple[str, ...]) -> dict[tuple[str, str], str]:
    """(system, code) → display from the value set's own concept lists, else its code systems."""
    names: dict[tuple[str, str], str] = {}
    valueset = find("ValueSet", url)
    if valueset is None or url in seen:
        return names
    for entry in _flat(((valueset.get("expansion") or {}).get("contains")) or []):
        if isinstance(entry.get("display"), str):
            names[(str(entry.get("system")), str(entry.get("code")))] = entry["display"]
    for include in (valueset.get("compose") or {}).get("include", []):
        system = include.get("system")
        if isinstance(system, str):
            codesystem = find("CodeSystem", system)
            for concept in _flat_concepts(codesystem.get("concept", []) if codesystem else []):
                shown = display_of(concept, language)
                if shown:
                    names.setdefault((system, concept["code"]), shown)
            for concept in include.get("concept") or []:
                shown = display_of(concept, language) if isinstance(concept, Mapping) else None
                if shown:
                    names[(system, concept["code"])] = shown
        for other in include.get("valueSet", []):
            for key, value in _displays(find, str(other), language, (*seen, url)).items():
                names.setdefault(key, value)
    return names


def _flat(contains: Iterable[Any]) -> Iterable[Mapping[str, Any]]:
    for entry in contains:
        if isinstance(entry, Mapping):
            yield entry
            yield from _flat(entry.get("contains", []))


def _flat_concepts(concepts: Iterable[Any]) -> Iterable[Mapping[str, Any]]:
    for concept in concepts:
        if isinstance(concept, Mapping) and isinstance(concept.get("code"), str):
            yield concept
            yield from _flat_concepts(concept.get("concept", []))
