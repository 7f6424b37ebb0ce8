"""A typed walk over a resource's JSON, shared by the rule families of ``fhirfus.fhir``.

Why: the JSON representation rules, narrative, attachment and extension checks all need to know,
for each value, which FHIR type it has and where it sits (``Patient.contact[0].name``); the
element tables generated from the official definitions (``data/fhir_elements.json``, read through
``fhirfus.fhir.bindings``) give that. One walk gives the nodes the rule modules read.

The walk follows the JSON exactly as sent: ``given`` and its ``_given`` partner are both visited,
the partner as an ``Element`` of the primitive's type (``primitive=True``) so primitive
extensions are checked like any other. Keys the tables do not know are skipped: the structural
validator reports them. Given a list of ``violations``, the walk also makes the checks of
``fhirfus.fhir.bindings.check_elements`` (required bindings, reference targets) on the way, so a
resource is walked once for both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from fhirfus.fhir.bindings import (
    RESOURCE_TABLE,
    BindingViolation,
    check_value,
    container_of,
    element_tables,
    resource_types,
)


class Node(NamedTuple):
    """One value of a resource (a tuple: a walk makes many, and tuples are the cheapest to make)."""

    expr: str  # where it is, with indexes: ``Patient.name[0].given[1]``
    path: str  # its element path from the resource root, no indexes: ``Patient.name.given``
    type: str  # FHIR type code: ``string``, ``HumanName``, ``BackboneElement``, ``Patient`` …
    value: Any
    definition: str = ""  # the element's definition path: ``HumanName.given``, ``Patient.contact.name``
    primitive: bool = False  # the ``_x`` object (id, extension) of a primitive of type ``type``


#: Object types a rule family reads (``extensions``, ``representation``, ``codings``).
NEEDED = frozenset({"Extension", "Attachment", "Coding", "Resource"})

#: Which primitive values (type code, value) become nodes; objects always do.
Keep = Callable[[str, Any], bool]


def walk(
    resource: Mapping[str, Any], keep: Keep = lambda kind, value: True,
    violations: list[BindingViolation] | None = None,
) -> list[Node]:
    """The objects of ``resource`` the rules read (itself first) and the primitives ``keep`` asks
    for, depth first, contained resources included; ``violations`` collects what
    ``check_elements`` would report, in its order."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in resource_types():
        return []
    out = [Node(resource_type, resource_type, resource_type, resource, resource_type)]
    _children(resource, resource_type, resource_type, resource_type, keep, out,
              violations, container_of(resource) if violations is not None else None)
    return out


class _Key(NamedTuple):
    """What a JSON key of one table means to the walk, worked out once per (table, key)."""

    name: str  # the element's name (``given`` for both ``given`` and ``_given``)
    kind: str  # its type code (a resource's own ``id`` is an ``id``)
    definition: str  # ``{table}.{name}``
    partner: bool  # the ``_x`` partner of a primitive
    needed: bool  # its objects always become nodes (``NEEDED``)
    table: str | None  # the table its objects are walked with (``Element`` for a partner)
    nested: bool  # holds a resource walked with its own ``resourceType``'s table
    bound: Any  # the element, when its values have a binding or reference targets to check (bindings)


#: table key → JSON key → ``_Key``, filled as tables are met: none of it depends on the values.
_plans: dict[str, dict[str, _Key | None]] = {}


def _plan(table_key: str) -> dict[str, _Key | None]:
    plan = _plans.get(table_key)
    if plan is None:
        plan = _plans[table_key] = {}
    return plan


def _key(table_key: str, key: str) -> _Key | None:
    """The meaning of ``key`` in ``table_key`` (None: not an element there; the structure check reports it)."""
    partner = key.startswith("_")
    name = key[1:] if partner else key
    element = element_tables().get(table_key, {}).get(name)
    if element is None:
        return None
    kind = "id" if name == "id" and table_key in resource_types() else element.type
    nested = not partner and element.table == RESOURCE_TABLE
    table = "Element" if partner else (None if nested else element.table)
    bound = None if partner or (element.valueset is None and element.type != "Reference") else element
    return _Key(name, kind, f"{table_key}.{name}", partner, kind in NEEDED, table, nested, bound)


def _children(
    obj: Mapping[str, Any], table_key: str, expr: str, path: str, keep: Keep, out: list[Node],
    violations: list[BindingViolation] | None, container: Any,
) -> None:
    """Append the nodes under ``obj`` (a list, not nested generators: those cost per level per node).

    Objects become nodes only when a rule reads them (``NEEDED``) or they may be an extension's
    parent or carry a ``resourceType``; the rest are only walked through."""
    plan = _plan(table_key)
    append = out.append
    for key, value in obj.items():
        try:
            meaning = plan[key]
        except KeyError:
            meaning = plan[key] = _key(table_key, key)
        if meaning is None:
            continue
        name, kind, definition, partner, needed, table, nested, bound = meaning
        repeated = isinstance(value, list)
        check = bound is not None and violations is not None
        if not repeated and not check and not isinstance(value, dict) and (partner or not keep(kind, value)):
            continue  # a single primitive no rule reads: most of a resource's values
        child_path = f"{path}.{name}"
        for index, item in enumerate(value) if repeated else ((None, value),):
            is_object = isinstance(item, dict)
            if check:
                check_value(item, bound, f"{expr}.{name}[{index}]" if repeated else f"{expr}.{name}", container,
                            violations)  # type: ignore[arg-type]
            if not is_object and (partner or not keep(kind, item)):
                continue
            child_expr = f"{expr}.{name}[{index}]" if repeated else f"{expr}.{name}"
            if not is_object:
                append(Node(child_expr, child_path, kind, item, definition))
                continue
            if needed or "extension" in item or "modifierExtension" in item or "resourceType" in item:
                append(Node(child_expr, child_path, kind, item, definition, partner))
            if nested:
                inner = item.get("resourceType")
                if isinstance(inner, str) and inner in resource_types():
                    append(Node(child_expr, inner, inner, item, inner))
                    # contained resources refer to their container's other contained resources; any
                    # other nested resource (a Bundle entry, a Parameters part) is a container of its own
                    inner_container = container if violations is None or definition.endswith(".contained") \
                        else container_of(item)
                    _children(item, inner, child_expr, inner, keep, out, violations, inner_container)
            elif table is not None:
                _children(item, table, child_expr, child_path, keep, out, violations, container)
