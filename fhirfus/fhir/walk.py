"""A typed walk over a resource's JSON, shared by the rule families of ``fhirfus.fhir``.

Why: the JSON representation rules, narrative, attachment and extension checks all need to know,
for each value, which FHIR type it has and where it sits (``Patient.contact[0].name``); the
element tables generated from the official definitions (``data/fhir_elements.json``, read through
``fhirfus.fhir.bindings``) give that. One walk yields every node, the rule modules pick theirs.

The walk follows the JSON exactly as sent: ``given`` and its ``_given`` partner are both visited,
the partner as an ``Element`` of the primitive's type (``primitive=True``) so primitive
extensions are checked like any other. Keys the tables do not know are skipped: the structural
validator reports them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fhirfus.fhir.bindings import RESOURCE_TABLE, element_tables, resource_types


@dataclass(frozen=True, slots=True)
class Node:
    """One value of a resource."""

    expr: str  # where it is, with indexes: ``Patient.name[0].given[1]``
    path: str  # its element path from the resource root, no indexes: ``Patient.name.given``
    type: str  # FHIR type code: ``string``, ``HumanName``, ``BackboneElement``, ``Patient`` …
    value: Any
    definition: str = ""  # the element's definition path: ``HumanName.given``, ``Patient.contact.name``
    primitive: bool = False  # the ``_x`` object (id, extension) of a primitive of type ``type``
    in_array: bool = False  # one item of a repeating element


def walk(resource: Mapping[str, Any]) -> Iterator[Node]:
    """Every node of ``resource`` (itself first), depth first, contained resources included."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in resource_types():
        return
    yield Node(resource_type, resource_type, resource_type, resource, resource_type)
    yield from _children(resource, resource_type, resource_type, resource_type)


def _children(obj: Mapping[str, Any], table_key: str, expr: str, path: str) -> Iterator[Node]:
    tables = element_tables()
    table = tables.get(table_key, {})
    for key, value in obj.items():
        partner = key.startswith("_")
        element = table.get(key[1:] if partner else key)
        if element is None:
            continue
        name = key[1:] if partner else key
        child_path = f"{path}.{name}"
        definition = f"{table_key}.{name}"
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            child_expr = f"{expr}.{name}" if index is None else f"{expr}.{name}[{index}]"
            if partner:
                if isinstance(item, Mapping):
                    yield Node(child_expr, child_path, element.type, item, definition, True, index is not None)
                    yield from _children(item, "Element", child_expr, child_path)
                continue
            yield Node(child_expr, child_path, element.type, item, definition, False, index is not None)
            if not isinstance(item, Mapping):
                continue
            if element.table == RESOURCE_TABLE:
                nested = item.get("resourceType")
                if isinstance(nested, str) and nested in resource_types():
                    yield Node(child_expr, nested, nested, item, nested)
                    yield from _children(item, nested, child_expr, nested)
            elif element.table is not None:
                yield from _children(item, element.table, child_expr, child_path)
