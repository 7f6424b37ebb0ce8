"""The ``TerminologyCapabilities`` statement (``GET /fhir/metadata?mode=terminology``): the code
systems this server knows the content of, and what its operations accept."""

from __future__ import annotations

from datetime import datetime

from fhirfus.terminology.sources import guide_resources, registered_resources


def terminology_capabilities(base: str, now: datetime) -> dict:
    systems: dict[str, set[str]] = {}
    for codesystem in [*guide_resources("CodeSystem"), *registered_resources("CodeSystem")]:
        url, version = codesystem.get("url"), codesystem.get("version")
        if isinstance(url, str) and codesystem.get("content") in (None, "complete"):
            systems.setdefault(url, set()).update([version] if isinstance(version, str) else [])
    return {
        "resourceType": "TerminologyCapabilities",
        "url": f"{base}/metadata?mode=terminology",
        "name": "FhirfusTerminology",
        "title": "fhirfus terminology service",
        "status": "active",
        "date": now.isoformat(timespec="seconds"),
        "kind": "instance",
        "implementation": {"description": "fhirfus terminology: the guide's code systems, value sets and concept "
                                          "maps, the R4 value sets of required bindings, and those stored here",
                           "url": base},
        "codeSystem": [{"uri": url, **({"version": [{"code": v} for v in sorted(versions)]} if versions else {})}
                       for url, versions in sorted(systems.items())],
        "expansion": {"hierarchical": False, "paging": True, "incomplete": False,
                      "parameter": [{"name": name} for name in ("filter", "count", "offset", "displayLanguage",
                                                                  "valueSetVersion")],
                      "textFilter": "Every word of the filter must occur in the code or the display (any case)."},
        "codeSearch": "all",
        "validateCode": {"translations": False},
        "translation": {"needsMap": False},
        "closure": {"translation": False},
    }
