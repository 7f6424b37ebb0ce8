"""Rules for conformance resources that name the core search parameters, as the reference
validator checks them: a composite SearchParameter has two or more components; one derived from a
core parameter keeps its type, stays within its bases, and its expression starts at one of its
own bases; a CapabilityStatement's ``searchParam`` has the type of the core parameter it names.

The core parameters are the generated ``data/search_parameters.json`` (type → code → type),
named by their canonical ``http://hl7.org/fhir/SearchParameter/{Type}-{code}``; a parameter shared
by several types under another name is not judged here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from fhirfus.errors import Issue

CORE = "http://hl7.org/fhir/SearchParameter/"
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
