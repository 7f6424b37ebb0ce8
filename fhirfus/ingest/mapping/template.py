"""Resource templates: JSON-shaped YAML with ``{placeholders}``.

- ``"{col}"`` alone → the typed value of ``col`` (int stays int); the element is dropped when empty.
- ``"text {a} {b}"`` → string interpolation (dropped when any placeholder is empty).
- ``"{@name}"`` → the ``urn:uuid`` of the resource named ``name`` in the same patient's Bundle.
- ``{"$each": col, "template": …}`` → one rendering per value of a split column (``{$}`` = value).
- ``{"$items": attribute, "template": …}`` → one rendering per filled column that has ``attribute``
  (``{$key}`` = that attribute's value, ``{$value}`` = the cell), e.g. questionnaire answers.
Empty objects and lists disappear, so optional data needs no conditionals.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\{([@$]?[A-Za-z0-9_.$-]*)\}")
DROP = object()


class Context:
    """Values visible to a template: the row, loop variables, references to sibling resources."""

    def __init__(
        self, values: Mapping[str, Any], reference: Callable[[str], str | None],
        items: Callable[[str], list[tuple[str, Any]]],
    ) -> None:
        self.values = values
        self.reference = reference
        self.items = items

    def child(self, **extra: Any) -> Context:
        return Context({**self.values, **extra}, self.reference, self.items)

    def lookup(self, name: str) -> Any:
        if name.startswith("@"):
            return self.reference(name[1:])
        return self.values.get(name)


def columns_used(node: Any) -> set[str]:
    """Names a template reads from the row: ``{col}`` placeholders and ``$each`` columns (not
    ``{@references}`` nor ``{$loop}`` variables)."""
    if isinstance(node, str):
        return {name for name in PLACEHOLDER.findall(node) if name and name[0] not in "@$"}
    if isinstance(node, list):
        return set().union(*(columns_used(element) for element in node))
    if isinstance(node, dict):
        used = {node["$each"]} if isinstance(node.get("$each"), str) else set()
        return used.union(*(columns_used(value) for key, value in node.items() if key != "$each"))
    return set()


def _render_string(text: str, context: Context) -> Any:
    whole = PLACEHOLDER.fullmatch(text)
    if whole:
        value = context.lookup(whole.group(1))
        return DROP if value is None or value == [] else value
    missing = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal missing
        value = context.lookup(match.group(1))
        if value is None:
            missing = True
            return ""
        return str(value)

    rendered = PLACEHOLDER.sub(substitute, text)
    return DROP if missing else rendered


def render(node: Any, context: Context) -> Any:
    """Render a template node; returns ``DROP`` for nothing."""
    if isinstance(node, str):
        return _render_string(node, context)
    if isinstance(node, list):
        out: list[Any] = []
        for element in node:
            rendered = render(element, context)
            if rendered is DROP:
                continue
            if isinstance(element, dict) and ("$each" in element or "$items" in element):
                out.extend(rendered)
            else:
                out.append(rendered)
        return out or DROP
    if isinstance(node, dict):
        if "$each" in node:
            values = context.lookup(node["$each"]) or []
            rendered = [render(node["template"], context.child(**{"$": v})) for v in values]
            return [r for r in rendered if r is not DROP] or DROP
        if "$items" in node:
            rendered = [render(node["template"], context.child(**{"$key": k, "$value": v}))
                        for k, v in context.items(node["$items"])]
            return [r for r in rendered if r is not DROP] or DROP
        out_dict = {}
        for key, value in node.items():
            rendered = render(value, context)
            if rendered is not DROP:
                out_dict[key] = rendered
        return out_dict or DROP
    return node
