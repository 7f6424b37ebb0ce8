"""Rules for conformance resources that name core definitions, as the reference validator checks
them: a composite SearchParameter has two or more components; one derived from a core parameter
keeps its type, stays within its bases, and its expression starts at one of its own bases; a
CapabilityStatement's ``searchParam`` has the type of the core parameter it names; a
StructureDefinition that constrains a core type only names elements that type has.

The core parameters are the generated ``data/search_parameters.json`` (type → code → type),
named by their canonical ``http://hl7.org/fhir/SearchParameter/{Type}-{code}``; a parameter shared
by several types under another name is not judged here. The core types' elements are the generated
``data/fhir_elements.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from fhirfus.errors import Issue
from fhirfus.fhir.bindings import element_definitions

CORE = "http://hl7.org/fhir/SearchParameter/"
CORE_STRUCTURE = "http://hl7.org/fhir/StructureDefinition/"
#: Types whose generated table is not R4's (the definitions it is generated from carry R5's
#: EvidenceVariable.characteristic): their profiles are not judged, lest an R4 path be refused.
NOT_R4_SHAPED = frozenset({"EvidenceVariable"})
#: Pseudo-tables of the path walk: a primitive (``id``, ``extension`` and ``value`` below it), a
#: primitive's value (nothing below it), a nested resource (anything below it: its type is not known).
_PRIMITIVE, _VALUE, _RESOURCE = "<primitive>", "<value>", "<resource>"
_DATA = Path(__file__).with_name("data") / "search_parameters.json"
_STARTS = re.compile(r"(?:^|\|)\s*\(?\s*([A-Z][A-Za-z]+)\b")


@cache
def _core() -> dict[str, dict[str, Any]]:
    return json.loads(_DATA.read_text(encoding="utf-8"))


def core_parameter(canonical: Any) -> tuple[str, str, str] | None:
    """(base type, code, type) of a core search parameter's canonical (``|version`` allowed)."""
    if not isinstance(canonical, str) or not canonical.startswith(CORE):
        return None
    name = canonical[len(CORE):].partition("|")[0]
    base, _, code = name.partition("-")
    found = _core().get(base, {}).get(code)
    return (base, code, found["type"]) if found else None


def conformance_issues(resource: Mapping[str, Any], resource_type: str) -> list[Issue]:
    if resource_type == "SearchParameter":
        return _search_parameter(resource)
    if resource_type == "CapabilityStatement":
        return _capability_statement(resource)
    if resource_type == "StructureDefinition":
        return _structure_definition(resource)
    return []


def _search_parameter(sp: Mapping[str, Any]) -> list[Issue]:
    issues: list[Issue] = []
    if sp.get("type") == "composite" and len(sp.get("component") or []) < 2:
        issues.append(Issue("A composite SearchParameter defines two or more components", "invalid", "error",
                            ("SearchParameter",)))
    bases = [b for b in sp.get("base") or [] if isinstance(b, str)]
    expression = sp.get("expression")
    if isinstance(expression, str) and bases:
        strangers = sorted({t for t in _STARTS.findall(expression) if t not in bases and t != "Resource"})
        if strangers:
            issues.append(Issue(f"The expression starts at {', '.join(strangers)}, which is not a base of this "
                                f"SearchParameter ({', '.join(bases)})", "invalid", "error",
                                ("SearchParameter.expression",)))
    derived = core_parameter(sp.get("derivedFrom"))
    if derived is not None:
        base, _code, kind = derived
        if sp.get("type") is not None and sp.get("type") != kind:
            issues.append(Issue(f"The type {sp.get('type')} differs from the type {kind} of {sp['derivedFrom']}, "
                                "which this SearchParameter is derived from", "invalid", "error", ("SearchParameter",)))
        outside = [b for b in bases if b != base and b != "Resource" and base != "Resource"]
        if outside:
            issues.append(Issue(f"{', '.join(outside)} is not a base of {sp['derivedFrom']}, which this "
                                "SearchParameter is derived from", "invalid", "error", ("SearchParameter",)))
    return issues


def _capability_statement(statement: Mapping[str, Any]) -> list[Issue]:
    issues: list[Issue] = []
    for r, rest in enumerate(statement.get("rest") or []):
        for e, entry in enumerate(rest.get("resource") or [] if isinstance(rest, Mapping) else []):
            for p, param in enumerate(entry.get("searchParam") or [] if isinstance(entry, Mapping) else []):
                if not isinstance(param, Mapping):
                    continue
                core = core_parameter(param.get("definition"))
                if core is not None and param.get("type") is not None and param["type"] != core[2]:
                    issues.append(Issue(
                        f"Type mismatch: {param['definition']} is a {core[2]} parameter, not {param['type']}",
                        "invalid", "error", (f"CapabilityStatement.rest[{r}].resource[{e}].searchParam[{p}]",)))
    return issues


def _structure_definition(sd: Mapping[str, Any]) -> list[Issue]:
    """Every element path of a constraint on a core resource or datatype names an element of that
    type: the reference validator cannot build the snapshot of one that does not. Logical models,
    specialisations and bases outside the core are not judged (their elements are not known here)."""
    base, kind = sd.get("baseDefinition"), sd.get("type")
    if (sd.get("derivation") != "constraint" or sd.get("kind") == "logical" or not isinstance(base, str)
            or not base.startswith(CORE_STRUCTURE) or not isinstance(kind, str) or kind not in _tables()
            or kind in NOT_R4_SHAPED):
        return []
    issues: list[Issue] = []
    for part in ("differential", "snapshot"):
        holder = sd.get(part)
        elements = holder.get("element") if isinstance(holder, Mapping) else None
        for index, element in enumerate(elements if isinstance(elements, list) else []):
            path = element.get("path") if isinstance(element, Mapping) else None
            problem = path_problem(kind, path) if isinstance(path, str) else None
            if problem is not None:
                issues.append(Issue(problem, "invalid", "error", (f"StructureDefinition.{part}.element[{index}].path",)))
    return issues


@cache
def _tables() -> Mapping[str, Mapping[str, Any]]:
    return element_definitions()["types"]


def path_problem(kind: str, path: str) -> str | None:
    """Why ``path`` names no element of the core type ``kind`` (None when it names one).

    Walks one name at a time through the element tables of every type the path may be in so far:
    backbone elements and ``contentReference``s by their own table, datatypes by theirs, a choice
    element as ``value[x]`` (all its types) or renamed to one of its types (``valueQuantity``)."""
    names = path.split(".")
    if "" in names:
        return f"Invalid path {path!r}: name portion missing ('..')"
    if names[0] != kind:
        return f"The path {path!r} does not start with {kind!r}, the type this StructureDefinition constrains"
    tables = {kind}
    for depth, name in enumerate(names[1:], 1):
        if ":" in name:
            return (f"The path {path!r} names a slice ({name!r}): a slice is named by the element's id "
                    "and sliceName, its path is the sliced element's")
        if _RESOURCE in tables:
            return None
        found: set[str] = set()
        choices: set[str] = set()
        for table in tables:
            if table == _PRIMITIVE:
                found |= {"id": {_PRIMITIVE}, "extension": {"Extension"}, "value": {_VALUE}}.get(name, set())
                continue
            elements = _tables().get(table, {})
            if name in elements:
                spec = elements[name]
                found |= {spec["p"]} if "p" in spec else {_table_of(code) for code in spec["t"] or ["string"]}
                continue
            for choice, spec in elements.items():
                stem = choice[:-3]
                if choice.endswith("[x]") and name.startswith(stem) and len(name) > len(stem):
                    choices.add(choice)
                    found |= {_table_of(code) for code in spec["t"] if code[0].upper() + code[1:] == name[len(stem):]}
        if not found:
            parent = ".".join(names[:depth])
            if choices:
                choice = min(choices)
                return (f"The path must be '{parent}.{choice}' not '{parent}.{name}': {name[len(choice) - 3:]} "
                        f"is not a type that {parent}.{choice} allows")
            return f"The path {path!r} names no element of {kind}: {parent} has no element {name!r}"
        tables = found
    return None


def _table_of(code: str) -> str:
    """Where the walk goes below an element of type ``code``."""
    if code in ("Resource", "DomainResource"):
        return _RESOURCE
    return code if code in _tables() else _PRIMITIVE
