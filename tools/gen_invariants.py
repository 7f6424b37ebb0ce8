"""Generate ``fhirfus/fhir/data/fhir_invariants.json`` from the official FHIR R4 definitions.

Why: the R4 core StructureDefinitions carry about 300 FHIRPath ``constraint``s (ele-1, dom-2, obs-6,
qty-3, bdl-7, ...) that no schema expresses. Taking them from the published definitions instead of
hand-writing them keeps the set exhaustive and reproducible.

Usage::

    python tools/gen_invariants.py /path/to/package/dist/fhir/r4

Output layout (compact JSON, sorted keys so diffs stay stable)::

    {
      "fhirVersion": "4.0.1",
      "constraints": {                   # element path -> constraints sitting on it
        "Observation": [{"key": "obs-6", "severity": "error", "human": "...",
                         "expression": "dataAbsentReason.empty() or value.empty()"}, ...],
        "Observation.referenceRange": [...],  # backbone elements: their own path
        "Quantity": [...],                    # datatypes: their name (wherever they occur)
        "Element": [ele-1], "Extension": [ext-1], "DomainResource": [dom-2..dom-6],
        ...},
    }

A constraint is written once, where it is defined: the copies a snapshot inherits from
``Element`` (ele-1 on every element), ``Extension`` (ext-1 on every extension element) and
``DomainResource`` (dom-* on every resource) are dropped, the runtime applies those base
definitions itself. Datatypes derived from another (Age from Quantity) keep their inherited
constraints, since the runtime looks a value up by its own type only. A constraint of a profiled
datatype (SimpleQuantity's sqty-1, MoneyQuantity's mqty-1) is attached to each element whose type
names that profile. ``bestPractice`` marks the constraints the spec flags with the
``elementdefinition-bestpractice`` extension (reported as warnings, never rejecting a write).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

JsonObj = dict[str, Any]

SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
BEST_PRACTICE = SD_PREFIX + "elementdefinition-bestpractice"
#: Base definitions whose constraints the runtime applies once, not per inheriting element.
BASES = ("Element", "Extension", "DomainResource", "Resource", "BackboneElement")
OUTPUT = Path(__file__).resolve().parent.parent / "fhirfus" / "fhir" / "data" / "fhir_invariants.json"


def definitions(directory: Path) -> list[JsonObj]:
    """The StructureDefinitions of the core resources and datatypes."""
    found = []
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((directory / name).read_text(encoding="utf-8"))
        found += [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "StructureDefinition"]
    return found


def _constraint(raw: JsonObj) -> JsonObj:
    best_practice = any(
        ext.get("url") == BEST_PRACTICE and ext.get("valueBoolean") is True for ext in raw.get("extension", ())
    )
    out = {"key": raw["key"], "severity": raw["severity"], "human": raw["human"], "expression": raw["expression"]}
    if best_practice:
        out["bestPractice"] = True
    return out


def _inherited_from_base(sd: JsonObj, raw: JsonObj) -> bool:
    source = raw.get("source", "").removeprefix(SD_PREFIX)
    return source in BASES and source != sd["name"]


def _own_constraints(sd: JsonObj) -> dict[str, list[JsonObj]]:
    """Element path → the constraints ``sd`` defines (or inherits from a non-base datatype)."""
    out: dict[str, list[JsonObj]] = {}
    root = sd["type"]
    elements = sd["snapshot"]["element"]
    if sd["name"] in BASES:  # a base's children inherit from Element itself: its root only
        elements = elements[:1]
    for element in elements:
        path = root + element["path"][len(element["path"].split(".")[0]):]
        for raw in element.get("constraint", ()):
            if "expression" in raw and not _inherited_from_base(sd, raw):
                out.setdefault(path, []).append(_constraint(raw))
    return out


def _profiled_type_constraints(sds: list[JsonObj], by_url: dict[str, JsonObj]) -> dict[str, list[JsonObj]]:
    """Element path → constraints of the constrained datatype profiles its type names (SimpleQuantity)."""
    out: dict[str, list[JsonObj]] = {}
    for sd in sds:
        for element in sd["snapshot"]["element"]:
            for type_ in element.get("type", ()):
                for profile in type_.get("profile", ()):
                    target = by_url.get(profile)
                    if target is None or target.get("derivation") != "constraint":
                        continue
                    own = [
                        _constraint(raw)
                        for raw in target["snapshot"]["element"][0].get("constraint", ())
                        if raw.get("source", target["url"]) == target["url"] and "expression" in raw
                    ]
                    if own:
                        out.setdefault(element["path"], []).extend(own)
    return out


def generate(directory: Path) -> JsonObj:
    sds = definitions(directory)
    by_url = {sd["url"]: sd for sd in sds}
    constraints: dict[str, list[JsonObj]] = {}
    for sd in sds:
        if sd.get("derivation") == "constraint":  # profiles (SimpleQuantity, vitalsigns): by type below
            continue
        if sd["kind"] == "logical":
            continue
        for path, found in _own_constraints(sd).items():
            constraints.setdefault(path, []).extend(found)
    for path, found in _profiled_type_constraints(sds, by_url).items():
        known = {c["key"] for c in constraints.get(path, ())}
        constraints.setdefault(path, []).extend(c for c in found if c["key"] not in known)
    return {"fhirVersion": "4.0.1", "constraints": dict(sorted(constraints.items()))}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    data = generate(Path(argv[1]))
    OUTPUT.write_text(json.dumps(data, sort_keys=True, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    count = sum(len(v) for v in data["constraints"].values())
    print(f"{OUTPUT}: {count} constraints on {len(data['constraints'])} element paths")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
