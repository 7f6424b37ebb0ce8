"""Registry of the search parameters known for each resource type.

The R4 definitions are generated once by ``tools/gen_search_parameters.py`` into
``data/search_parameters.json`` (already expanded per resource type), so this
module only loads and serves them.  fhirfus's own SearchParameter resources are
layered on top with :func:`add_custom_param`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class SearchParam:
    """One search parameter as it applies to one resource type.

    ``expression`` is FHIRPath rooted at that resource type (empty when the
    parameter has none, e.g. ``_text``); ``components`` are ``(code, expression)``
    pairs of a composite, each expression relative to a node the composite's
    own expression selects.
    """

    code: str
    type: str
    expression: str
    targets: tuple[str, ...] = ()
    components: tuple[tuple[str, str], ...] = ()


_custom: dict[str, dict[str, SearchParam]] = {}
_views: dict[str, Mapping[str, SearchParam]] = {}
_lock = threading.Lock()


@cache
def _load_json(name: str) -> Any:
    """Read a generated data file once per process."""
    with (DATA_DIR / name).open(encoding="utf-8") as handle:
        return json.load(handle)


def _from_json(entry: Mapping[str, Any]) -> SearchParam:
    """Build a SearchParam from its generated JSON form."""
    return SearchParam(
        code=str(entry["code"]),
        type=str(entry["type"]),
        expression=str(entry.get("expression", "")),
        targets=tuple(entry.get("target", ())),
        components=tuple((str(c["code"]), str(c["expression"])) for c in entry.get("component", ())),
    )


@cache
def _standard_params(resource_type: str) -> dict[str, SearchParam]:
    """The R4 parameters of one resource type (empty for unknown types)."""
    table: Mapping[str, Mapping[str, Any]] = _load_json("search_parameters.json").get(
        resource_type, {}
    )
    return {code: _from_json(entry) for code, entry in table.items()}


def params_for(resource_type: str) -> Mapping[str, SearchParam]:
    """Code -> parameter for a resource type, standard R4 plus custom ones.

    The returned mapping is read-only and cached; after :func:`add_custom_param`
    a new mapping is returned, so callers may key their own caches on its identity.
    """
    view = _views.get(resource_type)
    if view is None:
        with _lock:
            merged = {**_standard_params(resource_type), **_custom.get(resource_type, {})}
            view = MappingProxyType(merged)
            _views[resource_type] = view
    return view


def patient_compartment_params(resource_type: str) -> tuple[str, ...]:
    """Codes of the parameters whose references put a resource in a Patient's compartment."""
    codes: list[str] = _load_json("compartment_patient.json").get(resource_type, [])
    return tuple(codes)


def add_custom_param(resource_type: str, param: SearchParam) -> None:
    """Register (or replace, by code) a parameter defined by a fhirfus SearchParameter resource."""
    if not param.code or not param.type:
        raise ValueError("a search parameter needs a code and a type")
    with _lock:
        _custom.setdefault(resource_type, {})[param.code] = param
        _views.pop(resource_type, None)


def remove_custom_param(resource_type: str, code: str) -> None:
    """Forget a custom parameter (its SearchParameter resource was deleted); standard ones stay."""
    with _lock:
        _custom.get(resource_type, {}).pop(code, None)
        _views.pop(resource_type, None)


def resource_types() -> tuple[str, ...]:
    """Every resource type with standard parameters (all concrete R4 types), sorted."""
    return tuple(sorted(_load_json("search_parameters.json")))
