"""The R4 core invariants (the FHIRPath ``constraint``s of the core StructureDefinitions) and where
they apply in a resource.

Why: structure and bindings say nothing about rules between elements (obs-6: no
``dataAbsentReason`` beside a value; per-1: start before end). ``data/fhir_invariants.json`` is
generated from the official definitions (``tools/gen_invariants.py``); this module only knows
*which* constraints sit on *which* element instance of a resource (``sites``). Evaluating them is
FHIRPath's job (``fhirfus.fhirpath.invariants``), so this layer stays free of an engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final, NamedTuple

from fhirfus.fhir.bindings import RESOURCE_TABLE, element_tables

DATA_FILE: Final = Path(__file__).with_name("data") / "fhir_invariants.json"

#: Constraints that fhirfus does not evaluate as FHIRPath, each with the reason. Every other
#: constraint of the data file is evaluated; a test checks this list names real keys only.
NOT_EVALUATED: Final[Mapping[str, str]] = {
    "txt-1": "XHTML content rules: checked by the narrative parser, not by FHIRPath (htmlChecks() is "
             "a validator-specific function no FHIRPath engine defines)",
    "txt-2": "the same htmlChecks() function: the narrative parser checks for non-whitespace content",
    "ctm-1": "needs resolve() of CareTeam.participant.member to any server resource; the reference "
             "checks of writes cover existence, not the target's type here",
}

#: Constraints whose published R4 expression is wrong (spec errata), with the expression evaluated
#: instead and the reason. The reference validator applies the same corrections.
CORRECTED: Final[Mapping[str, tuple[str, str]]] = {
    "que-12": (
        "enableWhen.count() > 1 implies enableBehavior.exists()",
        "R4 publishes 'enableWhen.count() > 2', contradicting its human text ('more than one "
        "enableWhen'); corrected to '> 1' in R4B and R5",
    ),
}

#: Resources that are not DomainResources (dom-* do not apply to them).
NOT_DOMAIN: Final = frozenset({"Bundle", "Binary", "Parameters"})


@dataclass(frozen=True, slots=True)
class Constraint:
    """One invariant as the definitions state it."""

    key: str
    severity: str  # "error" or "warning"
    human: str
    expression: str
    best_practice: bool
    path: str  # the element path it is defined on, e.g. "Observation.referenceRange"

    @property
    def rejects(self) -> bool:
        """Whether a failure refuses a write (errors only; best practice and warnings inform)."""
        return self.severity == "error" and not self.best_practice


class Site(NamedTuple):
    """An element instance and the constraints sitting on it (a tuple: a resource has dozens)."""

    constraints: tuple[Constraint, ...]
    value: Any  # the JSON value (object or primitive)
    type: str  # fhirpathpy model path of the value's type ("Quantity", "Observation.referenceRange")
    expression: str  # where it is, e.g. "Observation.referenceRange[0].low"
    resource: Mapping[str, Any]  # the nearest enclosing resource (%resource)
    root: Mapping[str, Any]  # the outermost resource (%rootResource)


@cache
def constraints() -> Mapping[str, tuple[Constraint, ...]]:
    """Element path → its evaluated constraints (the ``NOT_EVALUATED`` ones left out)."""
    raw = json.loads(DATA_FILE.read_text(encoding="utf-8"))["constraints"]
    return {
        path: tuple(
            Constraint(c["key"], c["severity"], c["human"], CORRECTED.get(c["key"], (c["expression"],))[0],
                       bool(c.get("bestPractice")), path)
            for c in found
            if c["key"] not in NOT_EVALUATED
        )
        for path, found in raw.items()
    }


def all_keys() -> frozenset[str]:
    """Every constraint key of the definitions, the ones not evaluated included."""
    raw = json.loads(DATA_FILE.read_text(encoding="utf-8"))["constraints"]
    return frozenset(c["key"] for found in raw.values() for c in found)


@cache
def _on(path: str, table: str | None) -> tuple[Constraint, ...]:
    """Constraints of an element at ``path`` whose value is walked with ``table`` (its datatype or
    backbone path): the element's own, then those of its type."""
    table_map = constraints()
    own = table_map.get(path, ())
    if table is None or table in (path, RESOURCE_TABLE):
        return own
    keys = {c.key for c in own}
    return own + tuple(c for c in table_map.get(table, ()) if c.key not in keys)


@cache
def resource_constraints(resource_type: str) -> tuple[Constraint, ...]:
    """The constraints on a resource of this type itself (DomainResource's, then its own)."""
    return _resource_constraints(resource_type)


@cache
def _resource_constraints(resource_type: str) -> tuple[Constraint, ...]:
    base = () if resource_type in NOT_DOMAIN else constraints().get("DomainResource", ())
    return base + constraints().get(resource_type, ())


def element_constraint() -> Constraint:
    """ele-1, the one constraint of every element (``hasValue() or (children().count() > id.count())``)."""
    return constraints()["Element"][0]


def sites(resource: Mapping[str, Any]) -> list[Site]:
    """Every element instance of ``resource`` that carries constraints, resources inside it
    (``contained``, ``Bundle.entry.resource``, ``Parameters.parameter.resource``) included. Of
    ele-1, which every element carries, only the instances that may break it (objects holding at
    most an ``id``) are listed. Unknown elements and resource types are skipped: structure
    validation reports them."""
    out: list[Site] = []
    resource_type = resource.get("resourceType")
    tables = element_tables()
    if isinstance(resource_type, str) and resource_type in tables:
        _resource_sites(resource, resource_type, resource_type, resource, tables, out)
    return out


def empty_elements(resource: Mapping[str, Any]) -> list[str]:
    """The expressions of the elements of ``resource`` that may break ele-1."""
    ele_1 = element_constraint()
    return [site.expression for site in sites(resource) if site.constraints == (ele_1,)]


Tables = Mapping[str, Mapping[str, Any]]


def _resource_sites(
    resource: Mapping[str, Any], resource_type: str, expr: str, root: Mapping[str, Any], tables: Tables, out: list[Site]
) -> None:
    found = _resource_constraints(resource_type)
    if found:
        out.append(Site(found, resource, resource_type, expr, resource, root))
    _walk(resource, resource_type, expr, resource, root, tables, out)


#: A primitive element without constraints: not visited at all.
_SKIP: Final = None
#: table → JSON key → (element, its constraints) or ``_SKIP``.
_plans: dict[str, dict[str, tuple[Any, tuple[Constraint, ...]] | None]] = {}


def columns(table: str) -> Mapping[str, tuple[Any, tuple[Constraint, ...]] | None]:
    """JSON key of an object walked with ``table`` → (its element, the constraints on its values),
    or None for a primitive element without constraints (nothing to visit). Keys not listed are
    unknown elements or ``_x`` siblings of primitives (see ``primitive_extras``)."""
    return _columns(table, element_tables())


def _columns(table: str, tables: Tables) -> dict[str, tuple[Any, tuple[Constraint, ...]] | None]:
    found = _plans.get(table)
    if found is None:  # built whole before it is shared: request threads walk concurrently
        found = {}
        for key, element in tables[table].items():
            on = _on(element.path, element.table)
            found[key] = _SKIP if element.table is None and not on else (element, on)
        _plans[table] = found
    return found


def _walk(
    obj: Mapping[str, Any], table: str, expr: str, resource: Mapping[str, Any],
    root: Mapping[str, Any], tables: Tables, out: list[Site],
) -> None:
    columns = _columns(table, tables)
    for key, value in obj.items():
        try:
            planned = columns[key]
        except KeyError:
            if key[:1] == "_":  # a primitive's id and extensions: ele-1 only
                _primitive_extras(value, f"{expr}.{key}", resource, root, out)
            continue
        if planned is None:
            continue
        element, found = planned
        if type(value) is list:
            for index, item in enumerate(value):
                _visit(item, element, found, f"{expr}.{key}[{index}]", resource, root, tables, out)
        else:
            _visit(value, element, found, f"{expr}.{key}", resource, root, tables, out)


def _visit(
    value: Any, element: Any, found: tuple[Constraint, ...], expr: str, resource: Mapping[str, Any],
    root: Mapping[str, Any], tables: Tables, out: list[Site],
) -> None:
    table = element.table
    if table == RESOURCE_TABLE:
        nested_type = value.get("resourceType") if isinstance(value, Mapping) else None
        if isinstance(nested_type, str) and nested_type in tables:
            # %rootResource is the container of a contained resource; a Bundle's or Parameters'
            # resources are roots of their own
            nested_root = root if element.path.endswith(".contained") else value
            _resource_sites(value, nested_type, expr, nested_root, tables, out)
        return
    if found:
        out.append(Site(found, value, table or element.path, expr, resource, root))
    if table is not None and type(value) is dict:
        if not value or (len(value) == 1 and "id" in value):
            out.append(Site((element_constraint(),), value, "Element", expr, resource, root))
            return
        _walk(value, table, expr, resource, root, tables, out)


def primitive_extras(value: Any, expr: str, resource: Mapping[str, Any], root: Mapping[str, Any]) -> list[Site]:
    """The ele-1 sites of a ``_x`` sibling of a primitive."""
    out: list[Site] = []
    _primitive_extras(value, expr, resource, root, out)
    return out


def _primitive_extras(value: Any, expr: str, resource: Mapping[str, Any], root: Mapping[str, Any], out: list[Site]) -> None:
    """``_birthDate: {}`` (or an item of ``_given: [...]``) holds neither value nor children."""
    items = enumerate(value) if type(value) is list else ((None, value),)
    for index, item in items:
        if type(item) is dict and (not item or (len(item) == 1 and "id" in item)):
            where = expr if index is None else f"{expr}[{index}]"
            out.append(Site((element_constraint(),), item, "Element", where, resource, root))


def unreferenced_contained(resource: Mapping[str, Any]) -> Iterator[str]:
    """dom-3 for JSON: the expressions of contained resources that nothing refers to. A contained
    resource is referenced when some string of the container is ``#`` + its id, or when it refers
    back to its container (``#``). Checked natively: the FHIRPath form walks ``descendants()`` four
    times, and its ``as(canonical)`` on a collection is an error in current FHIRPath engines."""
    contained = resource.get("contained")
    if not isinstance(contained, list) or not contained:
        return
    pointers = set(_strings_with_hash(resource))
    for index, item in enumerate(contained):
        if not isinstance(item, Mapping):
            continue
        if f"#{item.get('id')}" in pointers or "#" in set(_strings_with_hash(item)):
            continue
        yield f"{resource.get('resourceType')}.contained[{index}]"


def _strings_with_hash(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if value.startswith("#"):
            yield value
    elif isinstance(value, Mapping):
        for child in value.values():
            yield from _strings_with_hash(child)
    elif isinstance(value, list):
        for child in value:
            yield from _strings_with_hash(child)
