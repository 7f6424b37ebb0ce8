"""fhirfus's own conformance resources from ``fhirfus/ig/`` that change server behaviour.

Today: SearchParameter resources (``fhirfus/ig/searchparameters/*.json``), registered next to the
official R4 parameters so they are indexed on write and searchable (e.g. Procedure ``target``);
and a check of the CodeSystems, ValueSets and ConceptMaps of ``fhirfus/ig/terminology`` (served by
``fhirfus.terminology``: ``:in``, ``$expand``, ``$translate``, …).
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import orjson

from fhirfus.fhir.validation import validate_resource
from fhirfus.ig import folder, resources_in
from fhirfus.search.registry import SearchParam, add_custom_param, shares_rows

log = logging.getLogger("fhirfus.conformance")


SEARCH_PARAMETERS = folder("searchparameters")


def load_search_parameters(directory: Path = SEARCH_PARAMETERS) -> list[str]:
    """Register every SearchParameter file of ``directory``; returns ``Type.code`` of each."""
    registered: list[str] = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        resource = validate_resource(orjson.loads(path.read_bytes()), "SearchParameter")
        for base in resource.get("base", []):
            expression = " | ".join(
                part.strip() for part in resource.get("expression", "").split("|") if part.strip().startswith(base)
            )
            param = SearchParam(
                code=resource["code"], type=resource["type"], expression=expression,
                targets=tuple(resource.get("target", ())),
            )
            add_custom_param(base, param)
            registered.append(f"{base}.{param.code}")
            if shares_rows(base, param.code):
                log.warning("custom search parameter %s.%s replaces a standard one whose index rows are shared "
                            "with another parameter: run `fhirfus reindex --type %s`", base, param.code, base)
    if registered:
        log.info("custom search parameters: %s", ", ".join(registered))
    return registered


@cache
def custom_parameter_urls(directory: Path = SEARCH_PARAMETERS) -> dict[tuple[str, str], str]:
    """(base type, code) → canonical URL of each of the guide's SearchParameters."""
    found: dict[tuple[str, str], str] = {}
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        resource = orjson.loads(path.read_bytes())
        for base in resource.get("base", []):
            found[(base, resource["code"])] = resource["url"]
    return found


def load_terminology() -> None:
    """Check every resource of ``fhirfus/ig/terminology`` at start-up (``terminology.sources`` serves
    them by canonical URL): a broken guide fails loudly here, not in the middle of a search."""
    for resource in resources_in("terminology"):
        validate_resource(resource)


def load_conformance() -> None:
    """Everything of ``fhirfus/ig/`` that changes server behaviour: at start-up, and before a data
    command writes (what it writes is indexed for the custom parameters too)."""
    load_search_parameters()
    load_terminology()
