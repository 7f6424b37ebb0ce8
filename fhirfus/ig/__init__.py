"""The fhirfus implementation guide and mappings: data shipped inside the package, read once per process.

Folders: ``questionnaires/`` (the TWSTRS Questionnaire), ``terminology/`` (CodeSystems, ValueSets,
ConceptMaps), ``profiles/`` (StructureDefinitions), ``searchparameters/`` (custom parameters),
``rules/`` (plausibility ranges), ``inbound/`` (site file → FHIR mappings), ``views/``
(ViewDefinitions of the analysis dataset), ``policies/`` (de-identification policies), ``analysis/`` (the analysis plan).

The files are the source of truth; code looks them up by canonical URL instead of repeating their
content. They are found through ``importlib.resources``, so an installed wheel serves them from
any working directory. Decimals are parsed as ``Decimal`` so scoring weights such as 0.25 stay
exact.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

#: The folder of the guide inside the installed package.
IG_DIR = Path(str(files(__name__)))


def folder(name: str) -> Path:
    """One folder of the guide (``terminology``, ``views``, ...)."""
    return IG_DIR / name


def load_json(path: Path) -> Any:
    """One JSON file, with decimals as ``Decimal`` (exact arithmetic, no binary float surprises)."""
    return json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)


@cache
def resources_in(folder: str) -> tuple[dict, ...]:
    """Every resource of ``<folder>/*.json``, in file-name order (cached: read once)."""
    directory = IG_DIR / folder
    return tuple(load_json(path) for path in sorted(directory.glob("*.json")))


def by_canonical(folder: str, resource_type: str, url: str) -> dict[str, dict]:
    """The resources of one type and canonical URL in ``folder``, keyed by ``version``."""
    return {
        str(r.get("version", "")): r
        for r in resources_in(folder)
        if r.get("resourceType") == resource_type and r.get("url") == url
    }


@cache
def code_displays(system: str) -> dict[str, str]:
    """code → display of a fhirfus CodeSystem in ``terminology`` (empty if unknown)."""
    for resource in by_canonical("terminology", "CodeSystem", system).values():
        return {c["code"]: c.get("display", c["code"]) for c in resource.get("concept", [])}
    return {}
