"""The elements of every R4 resource, datatype and backbone element, by the name they have in JSON:
position in the definition, whether they repeat, their type and where their own elements are.
Read from the generated ``data/fhir_elements.json``; used to write and read XML and to apply
FHIRPath Patches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from fhirfus.fhir.bindings import element_definitions


@dataclass(frozen=True, slots=True)
class Element:
    """One JSON property of a table (choice types resolved: ``valueQuantity`` is one)."""

    name: str  # JSON name (choice types resolved: valueQuantity)
    order: int
    many: bool
    type: str  # the type of this JSON name
    table: str | None  # nested table, "Resource" for a nested resource, None for a primitive


@dataclass(frozen=True, slots=True)
class ElementModel:
    """Every table (resource, datatype, backbone path) → its elements by JSON name."""

    tables: Mapping[str, Mapping[str, Element]]
    resources: frozenset[str]


@cache
def element_model() -> ElementModel:
    """Loaded once per process."""
    raw = element_definitions()
    keys = frozenset(raw["types"])
    tables: dict[str, dict[str, Element]] = {}
    for key, specs in raw["types"].items():
        table: dict[str, Element] = {}
        for name, spec in specs.items():
            types: list[str] = spec["t"] or ["string"]
            for type_code in types:
                if "p" in spec:
                    nested: str | None = spec["p"]
                elif type_code == "Resource":
                    nested = "Resource"
                else:
                    nested = type_code if type_code in keys else None
                json_name = name[:-3] + type_code[0].upper() + type_code[1:] if name.endswith("[x]") else name
                table[json_name] = Element(json_name, spec.get("o", 0), "m" in spec, type_code, nested)
        tables[key] = table
    return ElementModel(tables, frozenset(raw["resources"]))
