"""Extensions checked against their definitions: the R4 core ones and the fhirfus IG's.

Why: an extension is how an EHR says what the base resource cannot; one used where its definition
does not allow it, repeated beyond its cardinality or carrying the wrong value type is data a
reader will misread. The definitions are compacted by ``tools/gen_extensions.py`` into
``data/extensions.json``. Checked per extension:

- ext-1: an extension has a value or sub-extensions, not both and not neither;
- a known url: whether it is a modifier (``modifierExtension``) or not (``extension``), its context (the element it sits on, by type, path or definition path, or a parent
  extension; elsewhere within the same resource or datatype only a warning, as R4's own examples
  do that), how many times it may appear on one element, its value[x] type, and its declared
  sub-extensions (their urls, cardinality and value types);
- an unknown url in the R4 core (``http://hl7.org/fhir/StructureDefinition/``) or fhirfus namespace
  is an error (nobody else
  may define one there, so it is a typo or an invention); any other unknown url is a warning.

Context ``fhirpath`` expressions are not evaluated (the core and IG definitions use none).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from fhirfus.errors import Issue
from fhirfus.fhir.walk import Node

DATA_FILE = Path(__file__).with_name("data") / "extensions.json"
#: Where only R4 core and fhirfus define extensions (IGs published under hl7.org, like US Core's
#: ``http://hl7.org/fhir/us/core/…`` that Synthea uses, are someone else's: unknown ones are warnings).
OWNED_NAMESPACES = ("http://hl7.org/fhir/StructureDefinition/", "https://fhirfus.org/fhir/StructureDefinition/")
EXTENSION_KEYS = ("extension", "modifierExtension")
#: Types an element context of this name also covers (profiles of Quantity, resource kinds).
CONTEXT_COVERS = {
    "Quantity": frozenset({"Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"}),
}
NOT_DOMAIN_RESOURCES = frozenset({"Bundle", "Binary", "Parameters"})


@cache
def definitions() -> Mapping[str, Mapping[str, Any]]:
    with DATA_FILE.open(encoding="utf-8") as fh:
        return json.load(fh)["extensions"]


def _value_key(extension: Mapping[str, Any]) -> str | None:
    return next((k for k in extension if k.startswith("value") and k[5:6].isupper()), None)


def _type_of(key: str) -> str:
    """``valueCodeableConcept`` → ``CodeableConcept``, ``valueString`` → ``string``."""
    name = key[5:]
    return name if name[0].isupper() and name not in _PRIMITIVE_KEYS else name[0].lower() + name[1:]


_PRIMITIVE_KEYS = frozenset({
    "Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id", "Instant", "Integer",
    "Markdown", "Oid", "PositiveInt", "String", "Time", "UnsignedInt", "Uri", "Url", "Uuid",
})


def _error(message: str, expr: str, code: str = "structure", severity: str = "error") -> Issue:
    return Issue(message, code, severity, (expr,))


def _value_issues(extension: Mapping[str, Any], rule: Mapping[str, Any], url: str, expr: str) -> list[Issue]:
    key = _value_key(extension)
    allowed = rule.get("value")
    if key is None:
        if rule.get("vmin") and not extension.get("extension"):
            return [_error(f"Extension {url} needs a value", f"{expr}.value[x]", "required")]
        return []
    if allowed is not None and _type_of(key) not in allowed:
        wanted = ", ".join(allowed) if allowed else "none (it has sub-extensions)"
        return [_error(f"Extension {url} cannot have {key}: value types allowed: {wanted}", f"{expr}.{key}")]
    return []


def _sub_issues(extension: Mapping[str, Any], rule: Mapping[str, Any], url: str, expr: str) -> list[Issue]:
    subs = rule.get("sub")
    children = extension.get("extension")
    if subs is None or not isinstance(children, list):
        return []
    issues: list[Issue] = []
    counts: Counter[str] = Counter()
    for index, child in enumerate(children):
        child_url = child.get("url") if isinstance(child, Mapping) else None
        where = f"{expr}.extension[{index}]"
        if not isinstance(child_url, str):
            continue
        sub = subs.get(child_url)
        if sub is None:
            if "://" not in child_url:  # an absolute url is an extension in its own right
                issues.append(_error(f"Extension {url} defines no sub-extension '{child_url}'", f"{where}.url"))
            continue
        counts[child_url] += 1
        issues += _value_issues(child, sub, f"{url}#{child_url}", where)
        issues += _sub_issues(child, sub, f"{url}#{child_url}", where)
    for child_url, sub in subs.items():
        if counts[child_url] < sub.get("min", 0):
            issues.append(_error(f"Extension {url} needs its sub-extension '{child_url}'", f"{expr}.extension", "required"))
        if sub.get("max") not in (None, "*") and counts[child_url] > int(sub["max"]):
            issues.append(_error(f"Sub-extension '{child_url}' of {url} may appear at most {sub['max']} time(s)",
                                 f"{expr}.extension"))
    return issues


def _context_matches(contexts: list[str], parent: Node) -> bool:
    names = {parent.type, parent.path, parent.definition}
    if parent.type == parent.path:  # a resource
        names |= {"Resource"} | (set() if parent.type in NOT_DOMAIN_RESOURCES else {"DomainResource"})
    if parent.type == "BackboneElement":
        names.add("BackboneElement")
    if parent.type == "Extension" and isinstance(parent.value, Mapping):
        names.add(f"extension:{parent.value.get('url')}")
    return any(context in names or parent.type in CONTEXT_COVERS.get(context, ()) or context == "Element"
               for context in contexts)


def _same_root(contexts: list[str], parent: Node) -> bool:
    """A context within the resource or datatype the extension sits in (``StructureDefinition`` for
    an extension on ``StructureDefinition.snapshot.element``): the wrong place, but the right thing."""
    roots = {parent.path.split(".")[0], parent.definition.split(".")[0]}
    return any(context.split(".")[0] in roots for context in contexts)


def _repeat_issues(parent: Node, key: str, parent_expr: str, known: Mapping[str, Mapping[str, Any]]) -> list[Issue]:
    """Extensions of one element repeated beyond their definition's ``max`` of 1."""
    siblings = parent.value.get(key) if isinstance(parent.value, Mapping) else None
    counts = Counter(s.get("url") for s in siblings or [] if isinstance(s, Mapping) and isinstance(s.get("url"), str))
    return [
        _error(f"Extension {url} may appear at most once on one element", f"{parent_expr}.{key}")
        for url, count in counts.items()
        if count > 1 and known.get(str(url).split("|")[0], {}).get("max") == "1"
    ]


def extension_issues(nodes: Iterable[Node]) -> list[Issue]:
    """Issues of every extension among the walked nodes."""
    issues: list[Issue] = []
    by_expr: dict[str, Node] = {}
    known = definitions()
    for node in nodes:
        by_expr[node.expr] = node
        value = node.value
        if node.type != "Extension" or node.primitive or not isinstance(value, dict):
            continue
        has_value = _value_key(value) is not None
        if has_value == bool(value.get("extension")):
            issues.append(_error("ext-1: an extension must have either sub-extensions or a value[x], not both"
                                 if has_value else "ext-1: an extension must have a value[x] or sub-extensions",
                                 node.expr, "invariant"))
        url = value.get("url")
        if not isinstance(url, str):
            continue
        parent_expr = node.expr.rsplit(".", 1)[0]
        parent = by_expr.get(parent_expr)
        if parent is not None and parent.type == "Extension" and "://" not in url and not url.startswith("urn:"):
            continue  # a sub-extension: checked with its parent
        if node.expr.endswith("[0]") and parent is not None:
            issues += _repeat_issues(parent, node.expr.rsplit(".", 1)[1].split("[")[0], parent_expr, known)
        rule = known.get(url.split("|")[0])
        if rule is None:
            if url.startswith(OWNED_NAMESPACES):
                issues.append(_error(f"Unknown extension {url}: no such definition in R4 or the fhirfus guide",
                                     f"{node.expr}.url"))
            elif "://" in url or url.startswith("urn:"):
                issues.append(_error(f"Extension {url} is not known here, so it was not checked",
                                     f"{node.expr}.url", "informational", "warning"))
            else:
                issues.append(_error(f"Extension url '{url}' must be absolute", f"{node.expr}.url", "value"))
            continue
        if rule.get("ctx") is not None and parent is not None and not _context_matches(rule["ctx"], parent):
            issues.append(_error(f"Extension {url} is not allowed on {parent.path} (contexts: {', '.join(rule['ctx'])})",
                                 node.expr, severity="warning" if _same_root(rule["ctx"], parent) else "error"))
        in_modifier_slot = node.path.endswith(".modifierExtension")
        if in_modifier_slot != bool(rule.get("modifier")):
            issues.append(_error(f"Extension {url} is {'not ' if in_modifier_slot else ''}a modifier extension: it "
                                 f"belongs in {'extension' if in_modifier_slot else 'modifierExtension'}", node.expr))
        issues += _value_issues(value, rule, url, node.expr)
        issues += _sub_issues(value, rule, url, node.expr)
    return issues
