"""Finding and rewriting references inside resources (Bundle processing needs both)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def iter_references(node: Any) -> Iterator[dict]:
    """Every JSON object with a string ``reference`` (i.e. every Reference), depth first."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            if isinstance(value, dict | list):
                yield from iter_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_references(item)


def rewrite_references(resource: dict, resolve: Callable[[str], str | None]) -> None:
    """Replace, in place, each ``reference`` for which ``resolve`` returns a new value."""
    for reference in iter_references(resource):
        replacement = resolve(reference["reference"])
        if replacement is not None:
            reference["reference"] = replacement
