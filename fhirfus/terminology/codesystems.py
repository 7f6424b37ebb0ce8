"""One code of one code system: ``$lookup``, ``$subsumes`` and ``CodeSystem/$validate-code``.

A code system is known when a CodeSystem resource with its concepts is found (``sources``), or,
for the R4 code systems of required bindings, from the codes their value sets enumerate (codes
without displays). Hierarchies come from nested concepts and from ``parent``/``child`` properties.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fhirfus.fhir.bindings import r4_system_codes
from fhirfus.terminology.expansion import ValueSetError, display_of
from fhirfus.terminology.sources import Lookup, finder


class UnknownCodeSystem(ValueSetError):
    """The canonical names no code system known here."""


class UnknownCode(ValueSetError):
    """The code system is known; the code is not one of its codes."""


@dataclass
class CodeSystemView:
    """The concepts of one code system, by code, with the hierarchy between them."""

    url: str
    name: str
    version: str | None
    concepts: dict[str, Mapping[str, Any]]
    parents: dict[str, set[str]] = field(default_factory=dict)
    case_sensitive: bool = True

    def find(self, code: str) -> Mapping[str, Any] | None:
        if code in self.concepts or self.case_sensitive:
            return self.concepts.get(code)
        folded = {c.lower(): c for c in self.concepts}
        return self.concepts.get(folded.get(code.lower(), ""))

    def ancestors(self, code: str) -> set[str]:
        found: set[str] = set()
        todo = list(self.parents.get(code, ()))
        while todo:
            parent = todo.pop()
            if parent not in found:
                found.add(parent)
                todo.extend(self.parents.get(parent, ()))
        return found

    def children(self, code: str) -> list[str]:
        return sorted(c for c, parents in self.parents.items() if code in parents)


def code_system(system: str, lookup: Lookup | None = None, version: str | None = None) -> CodeSystemView:
    """The code system ``system`` (``version`` if given); ``UnknownCodeSystem`` if not known here."""
    find = finder(lookup)
    resource = find("CodeSystem", f"{system}|{version}" if version else system)
    if resource is not None and resource.get("concept"):
        view = CodeSystemView(system, str(resource.get("name") or resource.get("title") or system),
                              resource.get("version"), {}, case_sensitive=resource.get("caseSensitive") is not False)
        _index(view, resource.get("concept", []), None)
        return view
    codes = r4_system_codes(system)
    if codes:
        return CodeSystemView(system, system, None, {code: {"code": code} for code in codes})
    what = f"CodeSystem '{system}'" + (f" version '{version}'" if version else "")
    if resource is not None:
        raise UnknownCodeSystem(f"{what} is known, but its concepts are not ({resource.get('content')})")
    raise UnknownCodeSystem(f"{what} is not known to this server")


def _index(view: CodeSystemView, concepts: Iterable[Any], parent: str | None) -> None:
    for concept in concepts:
        if not isinstance(concept, Mapping) or not isinstance(concept.get("code"), str):
            continue
        code = concept["code"]
        view.concepts[code] = concept
        links = view.parents.setdefault(code, set())
        if parent is not None:
            links.add(parent)
        for prop in concept.get("property") or ():
            value = prop.get("valueCode") if isinstance(prop, Mapping) else None
            if isinstance(value, str) and prop.get("code") == "parent":
                links.add(value)
            elif isinstance(value, str) and prop.get("code") == "child":
                view.parents.setdefault(value, set()).add(code)
        _index(view, concept.get("concept", []), code)


def lookup_code(
    system: str, code: str, lookup: Lookup | None = None, version: str | None = None, language: str | None = None,
) -> dict[str, Any]:
    """$lookup: name, version, display, definition, designations and properties of one code."""
    view = code_system(system, lookup, version)
    concept = view.find(code)
    if concept is None:
        raise UnknownCode(f"'{code}' is not a code of {system}")
    found: dict[str, Any] = {"name": view.name, "version": view.version, "display": display_of(concept, language),
                             "definition": concept.get("definition"), "designation": [], "property": []}
    for designation in concept.get("designation") or ():
        if isinstance(designation, Mapping):
            found["designation"].append(designation)
    for parent in sorted(view.parents.get(concept["code"], ())):
        found["property"].append({"code": "parent", "valueCode": parent})
    for child in view.children(concept["code"]):
        found["property"].append({"code": "child", "valueCode": child})
    for prop in concept.get("property") or ():
        if isinstance(prop, Mapping) and prop.get("code") not in ("parent", "child"):
            found["property"].append(prop)
    return found


def subsumes(system: str, code_a: str, code_b: str, lookup: Lookup | None = None, version: str | None = None) -> str:
    """$subsumes: ``equivalent``, ``subsumes`` (a is an ancestor of b), ``subsumed-by`` or
    ``not-subsumed``."""
    view = code_system(system, lookup, version)
    for code in (code_a, code_b):
        if view.find(code) is None:
            raise UnknownCode(f"'{code}' is not a code of {system}")
    a, b = view.find(code_a)["code"], view.find(code_b)["code"]  # type: ignore[index]
    if a == b:
        return "equivalent"
    if a in view.ancestors(b):
        return "subsumes"
    if b in view.ancestors(a):
        return "subsumed-by"
    return "not-subsumed"


def validate_in_system(
    system: str, code: str, display: str | None = None, lookup: Lookup | None = None, version: str | None = None,
) -> tuple[bool, str, str | None]:
    """CodeSystem/$validate-code: (valid, message, the code's display)."""
    try:
        view = code_system(system, lookup, version)
    except UnknownCodeSystem as exc:
        return False, str(exc), None
    concept = view.find(code)
    if concept is None:
        return False, f"'{code}' is not a code of {system}", None
    shown = display_of(concept, None)
    if display is not None and shown is not None and display.strip().lower() != shown.lower():
        return False, f"'{display}' is not the display of {system}#{code}, which is '{shown}'", shown
    return True, f"{system}#{code} is valid", shown
