"""Generate ``fhirfus/fhir/data/fhir_elements.json`` from the official FHIR R4 definitions.

Why: the ``fhir.resources`` pydantic models check structure but not *required*
terminology bindings (they accept ``Patient.gender = "banana"``).  The runtime
checker (``fhirfus.fhir.bindings``) needs, for every resource, complex datatype
and backbone path, the child elements with their types and the codes allowed by
each required binding.  Deriving that from the published StructureDefinitions
and ValueSets (instead of hand-written tables) keeps it exhaustive and
reproducible.

Usage::

    python tools/gen_bindings.py /path/to/package/dist/fhir/r4

Output layout (compact JSON, sorted keys so diffs stay stable)::

    {
      "fhirVersion": "4.0.1",
      "resources": ["Account", ...],              # concrete resource types
      "types": {                                  # resource / datatype / backbone path
        "Patient": {
          "gender":  {"t": ["code"], "b": "http://hl7.org/fhir/ValueSet/administrative-gender"},
          "contact": {"t": ["BackboneElement"], "p": "Patient.contact"},
          "deceased[x]": {"t": ["boolean", "dateTime"]}, ...},
        "Patient.contact": {...}, "HumanName": {...}, ...},
      "valuesets": {url: {system: [codes]}},      # only enumerable, required-bound sets
      "unenumerable": {url: reason}               # required bindings left unchecked
    }

Element keys: ``o`` position in the definition (XML order), ``m`` present when the element
repeats (a JSON array), ``t`` type codes, ``p`` path of the nested element table
(BackboneElement / Element children, or the target of a ``contentReference``),
``b`` canonical URL (version stripped) of an enumerable required value set, ``r`` the resource
types a Reference element may name (absent: any).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

JsonObj = dict[str, Any]
Expansion = dict[str, set[str]]

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
TERMINOLOGY_FILES = ("valuesets.json", "v3-codesystems.json", "v2-tables.json")
CORE_VALUESET_PREFIX = "http://hl7.org/fhir/ValueSet/"
CORE_STRUCTURE_PREFIX = "http://hl7.org/fhir/StructureDefinition"
OUTPUT = Path(__file__).resolve().parent.parent / "fhirfus" / "fhir" / "data" / "fhir_elements.json"


class Unenumerable(Exception):
    """Raised when a ValueSet cannot be expanded to a finite, known code list."""


def strip_version(url: str) -> str:
    """Drop a ``|version`` suffix (index and output keys are version-less canonicals)."""
    return url.split("|", 1)[0]


def bundle_resources(path: Path) -> Iterator[JsonObj]:
    """Yield the resources of a FHIR Bundle file."""
    with path.open(encoding="utf-8") as fh:
        bundle = json.load(fh)
    for entry in bundle.get("entry", []):
        if "resource" in entry:
            yield entry["resource"]


# --------------------------------------------------------------------------- terminology


def concept_codes(concepts: Iterable[JsonObj]) -> Iterator[str]:
    """Yield the codes of a CodeSystem concept tree (nested concepts are valid codes too)."""
    for concept in concepts:
        yield concept["code"]
        yield from concept_codes(concept.get("concept", []))


class Terminology:
    """Index of CodeSystems and ValueSets able to expand simple, closed value sets."""

    def __init__(self, resources: Iterable[JsonObj]) -> None:
        self.code_systems: dict[str, JsonObj] = {}
        self.value_sets: dict[str, list[JsonObj]] = {}
        for res in resources:
            if "url" not in res:
                continue
            if res["resourceType"] == "CodeSystem":
                self.code_systems.setdefault(strip_version(res["url"]), res)
            elif res["resourceType"] == "ValueSet":
                self.value_sets.setdefault(strip_version(res["url"]), []).append(res)
        self._cache: dict[str, Expansion | Unenumerable] = {}

    def value_set(self, canonical: str) -> JsonObj:
        """Resolve ``url`` or ``url|version``; a requested version must match exactly."""
        url, _, version = canonical.partition("|")
        candidates = self.value_sets.get(url, [])
        if not candidates:
            raise Unenumerable(f"value set {url} not available")
        if not version:
            return candidates[0]
        for vs in candidates:
            if vs.get("version") == version:
                return vs
        have = ", ".join(str(vs.get("version")) for vs in candidates)
        raise Unenumerable(f"value set {url} version {version} not available (package has {have})")

    def system_codes(self, system: str) -> set[str]:
        """All codes of a whole code system, if the package holds its complete content."""
        cs = self.code_systems.get(strip_version(system))
        if cs is None:
            raise Unenumerable(f"code system {system} not available")
        if cs.get("content") != "complete" or not cs.get("concept"):
            raise Unenumerable(f"code system {system} content is {cs.get('content')!r}")
        return set(concept_codes(cs["concept"]))

    def expand(self, url: str, stack: tuple[str, ...] = ()) -> Expansion:
        """Expand a value set (``url`` or ``url|version``) to ``{system: codes}`` or raise :class:`Unenumerable`."""
        cached = self._cache.get(url)
        if isinstance(cached, Unenumerable):
            raise cached
        if cached is not None:
            return cached
        if url in stack:
            raise Unenumerable(f"circular import of {url}")
        try:
            result = self._expand_uncached(url, (*stack, url))
        except Unenumerable as exc:
            self._cache[url] = exc
            raise
        self._cache[url] = result
        return result

    def _expand_uncached(self, url: str, stack: tuple[str, ...]) -> Expansion:
        """Apply ``compose.include`` then ``compose.exclude``; an empty result is useless for checking."""
        vs = self.value_set(url)
        compose = vs.get("compose", {})
        result: Expansion = {}
        for include in compose.get("include", []):
            merge_into(result, self._include(include, stack))
        for exclude in compose.get("exclude", []):
            subtract(result, self._exclude(exclude))
        if not any(result.values()):
            raise Unenumerable(f"value set {url} expands to nothing")
        return result

    def _include(self, include: JsonObj, stack: tuple[str, ...]) -> Expansion:
        """Codes of one include: explicit concepts, a whole code system and/or imported value sets."""
        if include.get("filter"):
            raise Unenumerable(f"filter on {include.get('system')}")
        imported = [self.expand(vs_url, stack) for vs_url in include.get("valueSet", [])]
        system = include.get("system")
        if system is None:
            result: Expansion = {}
            for part in imported:
                merge_into(result, part)
            return result
        codes = {c["code"] for c in include["concept"]} if include.get("concept") else self.system_codes(system)
        for part in imported:  # system + valueSet in one include means intersection
            codes &= part.get(system, set())
        return {system: codes}

    def _exclude(self, exclude: JsonObj) -> Expansion:
        """Codes of one exclude; only explicit concepts or whole code systems can be subtracted."""
        if exclude.get("filter") or exclude.get("valueSet") or "system" not in exclude:
            raise Unenumerable("exclude by filter or value set")
        system = exclude["system"]
        codes = {c["code"] for c in exclude["concept"]} if exclude.get("concept") else self.system_codes(system)
        return {system: codes}


def merge_into(target: Expansion, part: Expansion) -> None:
    """Union ``part`` into ``target`` system by system."""
    for system, codes in part.items():
        target.setdefault(system, set()).update(codes)


def subtract(target: Expansion, part: Expansion) -> None:
    """Remove ``part`` codes from ``target``."""
    for system, codes in part.items():
        if system in target:
            target[system] -= codes


# --------------------------------------------------------------------------- structure


def type_codes(element: JsonObj) -> list[str]:
    """Type codes of an element, mapping FHIRPath system types back to FHIR type names."""
    codes: list[str] = []
    for type_ in element.get("type", []):
        code = type_["code"]
        for ext in type_.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                code = ext.get("valueUrl") or ext.get("valueUri") or code
        codes.append(code)
    return codes


def is_table_definition(sd: JsonObj) -> bool:
    """Keep R4 base definitions of resources and complex types.

    Profiles, primitives, logical models and definitions from other FHIR releases
    (the Medplum package back-ports R4B ``SubscriptionStatus``) are left out.
    """
    if not str(sd.get("fhirVersion", "")).startswith("4.0."):
        return False
    if sd.get("derivation") == "constraint" or sd["kind"] not in ("resource", "complex-type"):
        return False
    return not (sd["kind"] == "resource" and sd.get("abstract"))


def element_tables(sd: JsonObj, required: dict[str, str]) -> dict[str, dict[str, JsonObj]]:
    """Build ``{path: {child_name: spec}}`` for a StructureDefinition snapshot.

    ``required`` maps element paths (``Patient.gender``) to required-binding URLs
    that turned out to be enumerable; the caller fills it beforehand.
    """
    elements = sd["snapshot"]["element"]
    by_path = {el["path"]: el for el in elements}
    parents = {el["path"].rsplit(".", 1)[0] for el in elements if "." in el["path"]}
    tables: dict[str, dict[str, JsonObj]] = {sd["type"]: {}}
    for el in elements:
        path: str = el["path"]
        if "." not in path:
            continue
        parent, name = path.rsplit(".", 1)
        spec = element_spec(el, by_path, path in parents, required.get(path))
        siblings = tables.setdefault(parent, {})
        spec["o"] = len(siblings)  # definition order: the order of elements in XML
        if el.get("max") != "1":
            spec["m"] = 1  # repeats: an array in JSON
        siblings[name] = spec
        if path in parents:
            tables.setdefault(path, {})
    return tables


def element_spec(el: JsonObj, by_path: dict[str, JsonObj], has_children: bool, binding: str | None) -> JsonObj:
    """Compact description of one element: types, nested table path, binding URL."""
    spec: JsonObj = {"t": type_codes(el)}
    ref = el.get("contentReference")
    if ref:
        target = ref.split("#", 1)[1]
        spec["t"] = type_codes(by_path[target])
        spec["p"] = target
    elif has_children:
        spec["p"] = el["path"]
    if binding:
        spec["b"] = binding
    targets = reference_targets(el)
    if targets:
        spec["r"] = targets
    return spec


def reference_targets(el: JsonObj) -> list[str]:
    """Resource types a Reference element may point to; empty when any type will do (``Resource``,
    no target profile) or when a target is a profile outside the core (it cannot be checked)."""
    targets: set[str] = set()
    for type_ in el.get("type", []):
        if type_["code"] != "Reference":
            continue
        profiles = type_.get("targetProfile", [])
        if not profiles:
            return []
        for profile in profiles:
            base, _, name = profile.rpartition("/")
            if base != CORE_STRUCTURE_PREFIX or name == "Resource":
                return []
            targets.add(name)
    return sorted(targets)


def required_bindings(sds: Iterable[JsonObj]) -> dict[str, str]:
    """Map element path -> canonical (``url|version``) of every required binding on a bindable type.

    Unversioned core bindings (``http://hl7.org/fhir/ValueSet/...``) implicitly mean the
    core release of the StructureDefinition, so a later value set shipped under the same
    URL (e.g. an R5 back-port) is not silently used to judge R4 data.
    """
    bindable = {"code", "Coding", "CodeableConcept"}
    found: dict[str, str] = {}
    for sd in sds:
        for el in sd["snapshot"]["element"]:
            binding = el.get("binding", {})
            canonical = binding.get("valueSet")
            if binding.get("strength") != "required" or not canonical or not bindable & set(type_codes(el)):
                continue
            if "|" not in canonical and canonical.startswith(CORE_VALUESET_PREFIX):
                canonical = f"{canonical}|{sd['fhirVersion']}"
            found[el["path"]] = canonical
    return found


# --------------------------------------------------------------------------- main


def build(definitions: Path) -> JsonObj:
    """Assemble the compact element/binding document from a ``dist/fhir/r4`` folder."""
    sds = [
        res
        for name in ("profiles-types.json", "profiles-resources.json")
        for res in bundle_resources(definitions / name)
        if res["resourceType"] == "StructureDefinition" and is_table_definition(res)
    ]
    terminology = Terminology(r for name in TERMINOLOGY_FILES for r in bundle_resources(definitions / name))
    valuesets: dict[str, dict[str, list[str]]] = {}
    unenumerable: dict[str, str] = {}
    enumerable_bindings: dict[str, str] = {}
    for path, canonical in required_bindings(sds).items():
        url = strip_version(canonical)
        try:
            expansion = terminology.expand(canonical)
        except Unenumerable as exc:
            unenumerable[url] = str(exc)
            continue
        valuesets[url] = {system: sorted(codes) for system, codes in expansion.items() if codes}
        enumerable_bindings[path] = url
    types: dict[str, dict[str, JsonObj]] = {}
    for sd in sds:
        types.update(element_tables(sd, enumerable_bindings))
    resources = sorted(sd["type"] for sd in sds if sd["kind"] == "resource")
    return {
        "fhirVersion": sds[0].get("fhirVersion", "4.0.1"),
        "resources": resources,
        "types": types,
        "valuesets": valuesets,
        "unenumerable": unenumerable,
    }


def render(doc: JsonObj) -> str:
    """Serialise compactly with sorted keys so regenerations diff cleanly."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """CLI entry point: generate the file and report its size and coverage."""
    if len(argv) != 2:
        print(f"usage: {argv[0]} /path/to/package/dist/fhir/r4", file=sys.stderr)
        return 2
    doc = build(Path(argv[1]))
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render(doc), encoding="utf-8")
    bound = sum(1 for table in doc["types"].values() for spec in table.values() if "b" in spec)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size:,} bytes)")
    print(
        f"{len(doc['resources'])} resources, {len(doc['types'])} element tables, "
        f"{bound} required-bound elements checked, {len(doc['valuesets'])} value sets enumerated, "
        f"{len(doc['unenumerable'])} left unchecked"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
