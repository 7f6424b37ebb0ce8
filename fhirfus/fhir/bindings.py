"""Element rules of FHIR R4 that the models do not check: required bindings and reference targets.

Why: the ``fhir.resources`` pydantic models validate structure only, so values
such as ``Patient.gender = "banana"`` or ``Observation.subject = Medication/1`` pass.  This module
walks raw resource JSON type-aware, using element tables generated from the official definitions
by ``tools/gen_bindings.py`` (``data/fhir_elements.json``), and reports

- codes that violate *required* bindings whose value sets can be enumerated;
- references that name a resource type the element does not allow (its ``targetProfile``s), by
  ``reference`` or by ``type``;
- contained references (``#id``) that name no contained resource of the resource.

Structure problems (unknown keys, wrong JSON types) are deliberately ignored: they are
reported by the structural validator.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

from fhirfus.fhir.reference_syntax import named_type, relative_fault

__all__ = [
    "BindingViolation", "check_elements", "check_required_bindings", "check_value", "container_of", "element_tables",
    "enumerated_valueset", "r4_system_codes", "resource_types",
]

DATA_FILE: Final = Path(__file__).with_name("data") / "fhir_elements.json"
RESOURCE_TABLE: Final = "<Resource>"  # marker: recurse using the nested resource's own resourceType


@dataclass(frozen=True)
class BindingViolation:
    """A code that a required binding does not allow, or a reference its element does not allow."""

    expression: str  # FHIRPath-like location, e.g. "Patient.contact[0].gender"
    message: str
    code: str = "code-invalid"  # OperationOutcome issue type


@dataclass(frozen=True, slots=True)
class _ValueSet:
    """Allowed codes of one enumerated value set."""

    url: str
    by_system: Mapping[str, frozenset[str]]
    codes: frozenset[str]  # union over systems, for bare ``code`` elements


@dataclass(frozen=True, slots=True)
class _Element:
    """What the walker needs to know about one JSON property of a given table."""

    path: str  # definition path, e.g. "Patient.contact.gender" or "HumanName.use"
    type: str  # concrete type for this JSON key (choice types resolved)
    table: str | None  # table to recurse into, RESOURCE_TABLE, or None for primitives
    valueset: _ValueSet | None
    targets: frozenset[str] | None = None  # resource types a Reference may name (None: any)


Table = Mapping[str, _Element]


@dataclass(frozen=True, slots=True)
class _Model:
    """Precomputed lookup tables, keyed by resource type, datatype or backbone path."""

    tables: Mapping[str, Table]
    resources: frozenset[str]
    valuesets: Mapping[str, _ValueSet]


# --------------------------------------------------------------------------- loading


def _choice_key(base: str, type_code: str) -> str:
    """JSON property name of a choice element for one type: ``value`` + ``code`` -> ``valueCode``."""
    return base + type_code[0].upper() + type_code[1:]


def _target_table(spec: Mapping[str, Any], type_code: str, table_keys: frozenset[str]) -> str | None:
    """Table a value of this element is walked with, or None when it is a primitive."""
    if "p" in spec:
        return str(spec["p"])
    if type_code == "Resource":
        return RESOURCE_TABLE
    return type_code if type_code in table_keys else None


def _build_table(
    key: str, specs: Mapping[str, Any], table_keys: frozenset[str], valuesets: Mapping[str, _ValueSet]
) -> dict[str, _Element]:
    """Map each JSON property name of a table to its element, expanding choice types."""
    table: dict[str, _Element] = {}
    for name, spec in specs.items():
        valueset = valuesets.get(spec["b"]) if "b" in spec else None
        targets = frozenset(spec["r"]) if "r" in spec else None
        path = f"{key}.{name}"
        types: list[str] = spec["t"] or [""]
        if name.endswith("[x]"):
            for type_code in types:
                target = _target_table(spec, type_code, table_keys)
                table[_choice_key(name[:-3], type_code)] = _Element(
                    path, type_code, target, valueset, targets if type_code == "Reference" else None)
        else:
            table[name] = _Element(path, types[0], _target_table(spec, types[0], table_keys), valueset, targets)
    return table


def _load_valuesets(raw: Mapping[str, Mapping[str, list[str]]]) -> dict[str, _ValueSet]:
    """Freeze the value set code lists for O(1) membership tests."""
    result: dict[str, _ValueSet] = {}
    for url, systems in raw.items():
        by_system = {system: frozenset(codes) for system, codes in systems.items()}
        result[url] = _ValueSet(url, by_system, frozenset().union(*by_system.values()))
    return result


def enumerated_valueset(url: str) -> Mapping[str, frozenset[str]] | None:
    """system -> codes of an R4 value set of a required binding (None if it is not one of them)."""
    valueset = _model().valuesets.get(url)
    return None if valueset is None else valueset.by_system


def r4_system_codes(system: str) -> frozenset[str]:
    """Every code of an R4 code system that the value sets of required bindings enumerate."""
    return _system_codes().get(system, frozenset())


@cache
def _system_codes() -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {}
    for valueset in _model().valuesets.values():
        for system, codes in valueset.by_system.items():
            found.setdefault(system, set()).update(codes)
    return {system: frozenset(codes) for system, codes in found.items()}


@cache
def element_definitions() -> dict[str, Any]:
    """The generated element tables as read (``data/fhir_elements.json``), once per process: the
    bindings, the XML writer and reader, and FHIRPath Patch all build on them."""
    with DATA_FILE.open(encoding="utf-8") as fh:
        return dict(json.load(fh))


@cache
def _model() -> _Model:
    """Load and index the generated definitions once per process."""
    raw = element_definitions()
    valuesets = _load_valuesets(raw["valuesets"])
    table_keys = frozenset(raw["types"])
    tables = {key: _build_table(key, specs, table_keys, valuesets) for key, specs in raw["types"].items()}
    return _Model(tables=tables, resources=frozenset(raw["resources"]), valuesets=valuesets)


# --------------------------------------------------------------------------- checking


def resource_types() -> frozenset[str]:
    """All concrete FHIR R4 resource type names known from the definitions."""
    return _model().resources


def element_tables() -> Mapping[str, Table]:
    """Resource type, datatype or backbone path → its JSON properties (choice types expanded), for
    the other walkers of resources (``fhirfus.fhir.walk``, the invariants)."""
    return _model().tables


def check_required_bindings(resource: Mapping[str, Any]) -> list[BindingViolation]:
    """Every code in ``resource`` that violates an enumerable required binding."""
    return [v for v in check_elements(resource) if v.code == "code-invalid"]


def check_elements(resource: Mapping[str, Any]) -> list[BindingViolation]:
    """Every binding and reference violation in ``resource``.

    A resource of unknown ``resourceType`` yields no violations: that is a
    structural error, reported elsewhere.
    """
    out: list[BindingViolation] = []
    resource_type = resource.get("resourceType")
    model = _model()
    if isinstance(resource_type, str) and resource_type in model.resources:
        _walk(resource, model.tables[resource_type], resource_type, model, _Container.of(resource), out)
    return out


@dataclass(frozen=True, slots=True)
class _Container:
    """What ``#id`` references inside a resource (and inside its contained resources) can name."""

    type: str  # ``#`` alone names the container itself
    contained: Mapping[str, str]  # id -> resourceType of each contained resource

    @classmethod
    def of(cls, resource: Mapping[str, Any]) -> _Container:
        contained = resource.get("contained")
        ids = {
            item["id"]: str(item.get("resourceType", ""))
            for item in (contained if isinstance(contained, list) else ())
            if isinstance(item, Mapping) and isinstance(item.get("id"), str)
        }
        return cls(str(resource.get("resourceType")), ids)


def _walk(
    obj: Mapping[str, Any], table: Table, expr: str, model: _Model, container: _Container,
    out: list[BindingViolation],
) -> None:
    """Visit the known properties of one JSON object (``_x`` extension siblings never match)."""
    for key, value in obj.items():
        element = table.get(key)
        if element is None or (element.table is None and element.valueset is None):
            continue
        if isinstance(value, list):
            for index, item in enumerate(value):
                _visit(item, element, f"{expr}.{key}[{index}]", model, container, out)
        else:
            _visit(value, element, f"{expr}.{key}", model, container, out)


def _visit(
    value: Any, element: _Element, expr: str, model: _Model, container: _Container, out: list[BindingViolation],
) -> None:
    """Check one value against its element's binding and targets, then descend into it."""
    if element.valueset is not None:
        _check_binding(value, element, element.valueset, expr, out)
    if element.table is None or not isinstance(value, Mapping):
        return
    if element.type == "Reference":
        _check_reference(value, element, expr, model, container, out)
    if element.table != RESOURCE_TABLE:
        _walk(value, model.tables[element.table], expr, model, container, out)
        return
    nested_type = value.get("resourceType")
    if isinstance(nested_type, str) and nested_type in model.resources:
        # contained resources refer to their container's other contained resources; any other
        # nested resource (a Bundle entry, a Parameters part) is a container of its own
        inner = container if element.path.endswith(".contained") else _Container.of(value)
        _walk(value, model.tables[nested_type], expr, model, inner, out)


def container_of(resource: Mapping[str, Any]) -> _Container:
    """What ``#id`` references inside ``resource`` can name (for ``check_value``)."""
    return _Container.of(resource)


def check_value(
    value: Any, element: _Element, expr: str, container: _Container, out: list[BindingViolation],
) -> None:
    """``check_elements``' checks of one value (its binding, the targets of a Reference) without
    descending into it: for the typed walk (``fhirfus.fhir.walk``), which descends itself, so a
    resource is walked once for its element rules and these."""
    if element.valueset is not None:
        _check_binding(value, element, element.valueset, expr, out)
    if element.type == "Reference" and element.table is not None and isinstance(value, Mapping):
        _check_reference(value, element, expr, _model(), container, out)


def _check_reference(
    value: Mapping[str, Any], element: _Element, expr: str, model: _Model, container: _Container,
    out: list[BindingViolation],
) -> None:
    """A ``#id`` reference names a contained resource; a relative one a type and an id that can exist;
    the type named is one the element allows."""
    reference = value.get("reference")
    named: str | None = None
    if isinstance(reference, str):
        if reference.startswith("#"):
            named = container.type if reference == "#" else container.contained.get(reference[1:])
            if named is None:
                out.append(BindingViolation(
                    f"{expr}.reference", f"{reference!r} names no contained resource", "not-found"))
                return
        else:
            fault = relative_fault(reference, model.resources)
            if fault is not None:
                out.append(BindingViolation(f"{expr}.reference", fault, "invalid"))
                return
            named = named_type(reference)
            if named is not None and named not in model.resources:
                named = None  # not a FHIR resource URL (e.g. another kind of server): not judged here
        if named is not None:
            _check_target(named, element, f"{expr}.reference", out)
    declared = value.get("type")
    if isinstance(declared, str):
        declared = declared.removeprefix("http://hl7.org/fhir/StructureDefinition/")
        if declared != named and declared in model.resources:
            _check_target(declared, element, f"{expr}.type", out)


def _check_target(named: str, element: _Element, expr: str, out: list[BindingViolation]) -> None:
    if element.targets is not None and named not in element.targets:
        allowed = ", ".join(sorted(element.targets))
        out.append(BindingViolation(
            expr, f"{element.path} cannot refer to a {named} (allowed: {allowed})", "invalid"))


def _check_binding(value: Any, element: _Element, valueset: _ValueSet, expr: str, out: list[BindingViolation]) -> None:
    """Dispatch on the bound type: bare code, Coding or CodeableConcept."""
    if element.type == "Coding":
        _check_coding(value, element, valueset, expr, out)
    elif element.type == "CodeableConcept":
        codings = value.get("coding") if isinstance(value, Mapping) else None
        if isinstance(codings, list):
            for index, coding in enumerate(codings):
                _check_coding(coding, element, valueset, f"{expr}.coding[{index}]", out)
    elif isinstance(value, str) and value not in valueset.codes:
        out.append(BindingViolation(expr, _message(value, None, element, valueset)))


def _check_coding(coding: Any, element: _Element, valueset: _ValueSet, expr: str, out: list[BindingViolation]) -> None:
    """Flag a coding whose system belongs to the value set but whose code does not.

    Codings from other systems are tolerated (lenient reading of the required
    CodeableConcept rule), as are codings without system or code.
    """
    if not isinstance(coding, Mapping):
        return
    system, code = coding.get("system"), coding.get("code")
    allowed = valueset.by_system.get(system) if isinstance(system, str) else None
    if allowed is not None and isinstance(code, str) and code not in allowed:
        out.append(BindingViolation(f"{expr}.code", _message(code, system, element, valueset)))


def _message(code: str, system: str | None, element: _Element, valueset: _ValueSet) -> str:
    """Human-readable explanation naming the element definition and the value set."""
    where = f" in system {system}" if system else ""
    return f"{code!r} is not a valid code{where} for {element.path} (required binding {valueset.url})"
