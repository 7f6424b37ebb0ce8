"""References: finding and rewriting them inside resources (Bundle processing), and the type and id a
literal reference names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from fhirfus.fhir.bindings import resource_types
from fhirfus.fhir.reference_syntax import split_literal


def iter_references(node: Any) -> Iterator[dict]:
    """Every JSON object with a string ``reference`` (i.e. every Reference), depth first."""
    out: list[dict] = []
    _collect(node, out)
    return iter(out)


def _collect(node: Any, out: list[dict]) -> None:
    """Plain recursion, not nested generators: ``yield from`` hands each item up every level."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            out.append(node)
        for value in node.values():
            if isinstance(value, dict | list):
                _collect(value, out)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _collect(item, out)


def references_at(node: Any, path: str, *, nested_resources: bool = True) -> Iterator[tuple[str, str]]:
    """(path of the Reference, reference) of every Reference in ``node``, depth first. Contained
    resources are skipped (they belong to their container, addressed by ``#id``); other nested
    resources (Bundle entries, Parameters parts) too unless ``nested_resources``."""
    out: list[tuple[str, str]] = []
    _collect_at(node, path, nested_resources, out)
    return iter(out)


def _collect_at(node: Any, path: str, nested_resources: bool, out: list[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str):
            out.append((path, reference))
        for key, value in node.items():
            if key == "contained" or not isinstance(value, dict | list):
                continue
            if not nested_resources and isinstance(value, dict) and "resourceType" in value:
                continue
            _collect_at(value, f"{path}.{key}", nested_resources, out)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, dict | list):
                _collect_at(item, f"{path}[{index}]", nested_resources, out)


def rewrite_references(resource: dict, resolve: Callable[[str], str | None]) -> None:
    """Replace, in place, each ``reference`` for which ``resolve`` returns a new value."""
    for reference in iter_references(resource):
        replacement = resolve(reference["reference"])
        if replacement is not None:
            reference["reference"] = replacement


@lru_cache(maxsize=16_384)
def reference_target(reference: str) -> tuple[str | None, str | None]:
    """Type and id of a literal reference (``Patient/1``, ``http://x/fhir/Patient/1/_history/2``).

    ``urn:uuid:``/``urn:oid:`` and ``#contained`` references, and URLs whose
    second-to-last segment is not a resource type, have none.

    Remembered: a resource's references are parsed two or three times while it is indexed (the
    ``where(resolve() is T)`` filters, then the values), and a patient's resources all name it.
    """
    literal = split_literal(reference)
    if literal is None or literal[0] not in resource_types():
        return None, None
    return literal
