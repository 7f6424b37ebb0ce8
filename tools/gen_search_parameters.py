"""Generate fhirfus's search-parameter tables from the official FHIR R4 definitions.

Usage::

    python tools/gen_search_parameters.py /tmp/medplum/package/dist/fhir/r4

Reads ``search-parameters.json``, ``profiles-resources.json`` and
``compartmentdefinition-patient.json`` from the given folder and writes

* ``fhirfus/fhir/data/search_parameters.json``: resource type -> code -> parameter
  (``code``, ``type``, ``expression`` and, when present, ``target``, ``component``,
  ``multipleOr``, ``multipleAnd``);
* ``fhirfus/fhir/data/compartment_patient.json``: resource type -> the codes of
  the parameters that put a resource of that type in a Patient's compartment.

Why a generator: the server needs the definitions per concrete resource type,
while the official Bundle shares one SearchParameter between many types (a
multi-base ``clinical-patient`` whose expression is a union over all of them,
and the ``Resource``/``DomainResource`` parameters that apply to every type).
Doing that expansion once, here, keeps it out of the write path and keeps the
FHIR knowledge in data instead of code.  Stdlib only, so it runs anywhere.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

Json = dict[str, Any]

OUTPUT_DIR = Path(__file__).resolve().parent.parent / "fhirfus" / "fhir" / "data"
ABSTRACT_BASES = ("Resource", "DomainResource")


def load_json(path: Path) -> Json:
    """Read one definitions file (all are plain JSON objects)."""
    with path.open(encoding="utf-8") as handle:
        data: Json = json.load(handle)
    return data


def bundle_resources(bundle: Json) -> Iterator[Json]:
    """The resources of a Bundle, whatever their kind."""
    for entry in bundle.get("entry", []):
        resource = entry.get("resource")
        if isinstance(resource, dict):
            yield resource


def concrete_resource_types(profiles: Json) -> dict[str, str]:
    """Map every concrete R4 resource type to its parent (``Resource`` or ``DomainResource``).

    The parent decides whether ``DomainResource`` parameters (``_text``) apply.
    """
    types: dict[str, str] = {}
    for definition in bundle_resources(profiles):
        if (
            definition.get("resourceType") == "StructureDefinition"
            and definition.get("kind") == "resource"
            and not definition.get("abstract")
            and definition.get("derivation") == "specialization"
        ):
            parent = str(definition.get("baseDefinition", "")).rsplit("/", 1)[-1]
            types[str(definition["type"])] = parent
    return types


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on its top-level ``|`` operators.

    Bars inside parentheses, brackets or string literals belong to a sub-expression.
    """
    branches: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    for char in expression:
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "([":
            depth += 1
        elif not quoted and char in ")]":
            depth -= 1
        elif not quoted and depth == 0 and char == "|":
            branches.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    branches.append("".join(current).strip())
    return [branch for branch in branches if branch]


def branch_is_for(branch: str, resource_type: str) -> bool:
    """Whether a union branch of a multi-base expression starts with ``resource_type``."""
    return re.match(rf"^\(*\s*{re.escape(resource_type)}(?![A-Za-z0-9])", branch) is not None


def expression_for(definition: Json, resource_type: str) -> str:
    """The part of a (possibly shared) expression that applies to one resource type.

    Multi-base parameters keep only the branches that start with the type;
    ``Resource.x``/``DomainResource.x`` become ``<Type>.x`` so that every
    expression is rooted at the concrete type it is evaluated on.
    """
    expression = str(definition.get("expression", ""))
    bases: list[str] = definition["base"]
    if not expression:
        return ""
    if bases[0] in ABSTRACT_BASES:
        return re.sub(rf"\b{bases[0]}\.", f"{resource_type}.", expression)
    if len(bases) == 1:
        return expression
    branches = [b for b in split_union(expression) if branch_is_for(b, resource_type)]
    return " | ".join(branches)


def component_codes(definition: Json, by_url: dict[str, Json]) -> list[dict[str, str]]:
    """Composite components as (code of the referenced parameter, relative expression)."""
    components: list[dict[str, str]] = []
    for component in definition.get("component", []):
        referenced = by_url.get(component["definition"])
        if referenced is None:
            raise ValueError(
                f"{definition['url']}: component {component['definition']} is not defined"
            )
        components.append({"code": referenced["code"], "expression": component["expression"]})
    return components


def parameter_entry(definition: Json, resource_type: str, by_url: dict[str, Json]) -> Json:
    """The JSON stored for one parameter on one resource type."""
    entry: Json = {
        "code": definition["code"],
        "type": definition["type"],
        "expression": expression_for(definition, resource_type),
    }
    if definition.get("target"):
        entry["target"] = sorted(definition["target"])
    if definition.get("component"):
        entry["component"] = component_codes(definition, by_url)
    for flag in ("multipleOr", "multipleAnd"):
        if flag in definition:
            entry[flag] = bool(definition[flag])
    return entry


def types_of(definition: Json, resource_types: dict[str, str]) -> Iterable[str]:
    """The concrete resource types a SearchParameter applies to."""
    for base in definition["base"]:
        if base == "Resource":
            yield from resource_types
        elif base == "DomainResource":
            yield from (t for t, parent in resource_types.items() if parent == "DomainResource")
        else:
            yield base


def build_search_parameters(definitions: list[Json], resource_types: dict[str, str]) -> Json:
    """Resource type -> code -> parameter, for every concrete resource type."""
    by_url = {str(d["url"]): d for d in definitions}
    table: dict[str, Json] = {resource_type: {} for resource_type in resource_types}
    for definition in definitions:
        for resource_type in types_of(definition, resource_types):
            entry = parameter_entry(definition, resource_type, by_url)
            if definition.get("expression") and not entry["expression"]:
                raise ValueError(f"{definition['url']}: no expression branch for {resource_type}")
            if entry["code"] in table[resource_type]:
                raise ValueError(f"{resource_type}: duplicate search parameter {entry['code']}")
            table[resource_type][entry["code"]] = entry
    check_components(table)
    return table


def check_components(table: Json) -> None:
    """Every composite component must name a parameter of the same type (the indexer needs its type)."""
    for resource_type, params in table.items():
        for param in params.values():
            for component in param.get("component", []):
                if component["code"] not in params:
                    raise ValueError(
                        f"{resource_type}.{param['code']}: unknown component {component['code']}"
                    )


def build_patient_compartment(compartment: Json, search_parameters: Json) -> Json:
    """Resource type -> parameter codes that link a resource to its Patient compartment."""
    table: dict[str, list[str]] = {}
    for member in compartment.get("resource", []):
        codes = [str(code) for code in member.get("param", [])]
        if not codes:
            continue
        resource_type = str(member["code"])
        unknown = [c for c in codes if c != "{def}" and c not in search_parameters[resource_type]]
        if unknown:
            raise ValueError(f"compartment {resource_type}: unknown parameters {unknown}")
        table[resource_type] = codes
    return table


def write_json(path: Path, data: Json) -> int:
    """Write compact, key-sorted JSON (stable diffs, small files); return its size in bytes."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    return len(text) + 1


def main(argv: list[str]) -> int:
    """Entry point: ``gen_search_parameters.py DEFINITIONS_DIR``."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    source = Path(argv[1])
    resource_types = concrete_resource_types(load_json(source / "profiles-resources.json"))
    definitions = [
        d
        for d in bundle_resources(load_json(source / "search-parameters.json"))
        if d.get("resourceType") == "SearchParameter"
    ]
    search_parameters = build_search_parameters(definitions, resource_types)
    compartment = build_patient_compartment(
        load_json(source / "compartmentdefinition-patient.json"), search_parameters
    )
    params_size = write_json(OUTPUT_DIR / "search_parameters.json", search_parameters)
    compartment_size = write_json(OUTPUT_DIR / "compartment_patient.json", compartment)
    total = sum(len(params) for params in search_parameters.values())
    print(
        f"{len(search_parameters)} resource types, {len(definitions)} definitions, "
        f"{total} per-type parameters ({params_size} bytes); "
        f"patient compartment: {len(compartment)} types ({compartment_size} bytes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
