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

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from fhirfus.fhir.bindings import RESOURCE_TABLE, element_tables, resource_types


class Node(NamedTuple):
    """One value of a resource (a tuple: a walk makes many, and tuples are the cheapest to make)."""

    expr: str  # where it is, with indexes: ``Patient.name[0].given[1]``
    path: str  # its element path from the resource root, no indexes: ``Patient.name.given``
    type: str  # FHIR type code: ``string``, ``HumanName``, ``BackboneElement``, ``Patient`` …
    value: Any
    definition: str = ""  # the element's definition path: ``HumanName.given``, ``Patient.contact.name``
    primitive: bool = False  # the ``_x`` object (id, extension) of a primitive of type ``type``


#: Which primitive values (type code, value) become nodes; objects always do.
Keep = Callable[[str, Any], bool]


def walk(resource: Mapping[str, Any], keep: Keep = lambda kind, value: True) -> list[Node]:
    """Every object of ``resource`` (itself first) and the primitives ``keep`` asks for, depth first,
    contained resources included."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in resource_types():
        return []
    out = [Node(resource_type, resource_type, resource_type, resource, resource_type)]
    _children(resource, resource_type, resource_type, resource_type, element_tables(), keep, out)
    return out


def _children(obj: Mapping[str, Any], table_key: str, expr: str, path: str, tables: Mapping[str, Any],
              keep: Keep, out: list[Node]) -> None:
    """Append the nodes under ``obj`` (a list, not nested generators: those cost per level per node)."""
    table = tables.get(table_key, {})
    append = out.append
    for key, value in obj.items():
        partner = key.startswith("_")
        name = key[1:] if partner else key
        element = table.get(name)
        if element is None:
            continue
        kind = "id" if name == "id" and table_key in resource_types() else element.type  # a resource's id is an id
        repeated = isinstance(value, list)
        for index, item in enumerate(value) if repeated else ((None, value),):
            if not isinstance(item, dict) and (partner or not keep(kind, item)):
                continue
            child_expr = f"{expr}.{name}[{index}]" if repeated else f"{expr}.{name}"
            child_path = f"{path}.{name}"
            definition = f"{table_key}.{name}"
            if partner:
                append(Node(child_expr, child_path, kind, item, definition, True))
                _children(item, "Element", child_expr, child_path, tables, keep, out)
                continue
            append(Node(child_expr, child_path, kind, item, definition))
            if not isinstance(item, dict):
                continue
            if element.table == RESOURCE_TABLE:
                nested = item.get("resourceType")
                if isinstance(nested, str) and nested in resource_types():
                    append(Node(child_expr, nested, nested, item, nested))
                    _children(item, nested, child_expr, nested, tables, keep, out)
            elif element.table is not None:
                _children(item, element.table, child_expr, child_path, tables, keep, out)
