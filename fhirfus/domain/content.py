"""Read fhirfus's own conformance resources (``mappings/``) once per process.

The files are the source of truth for the implementation guide; code looks them up by canonical URL
instead of repeating their content. Decimals are parsed as ``Decimal`` so scoring weights such as 0.25
stay exact.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

MAPPINGS_DIR = Path(__file__).resolve().parents[2] / "mappings"


def load_json(path: Path) -> Any:
    """One JSON file, with decimals as ``Decimal`` (exact arithmetic, no binary float surprises)."""
    return json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)


@cache
def resources_in(folder: str) -> tuple[dict, ...]:
    """Every resource of ``mappings/<folder>/*.json``, in file-name order (cached: read once)."""
    directory = MAPPINGS_DIR / folder
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
    """code → display of a fhirfus CodeSystem in ``mappings/terminology`` (empty if unknown)."""
    for resource in by_canonical("terminology", "CodeSystem", system).values():
        return {c["code"]: c.get("display", c["code"]) for c in resource.get("concept", [])}
    return {}
