"""Registry of the search parameters known for each resource type.

The R4 definitions are generated once by ``tools/gen_search_parameters.py`` into
``data/search_parameters.json`` (already expanded per resource type), so this
module only loads and serves them.  fhirfus's own SearchParameter resources are
layered on top with :func:`add_custom_param`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fhirfus.fhirpath.paths import split_union

#: The generated FHIR data (``tools/gen_search_parameters.py``) lives with the rest of it in ``fhirfus.fhir``.
DATA_DIR = Path(str(files("fhirfus.fhir"))) / "data"


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


# --- rows shared between parameters ------------------------------------------------------------
#
# Some parameters of a type are unions that contain another parameter whole: Observation
# ``combo-code`` is ``Observation.code | Observation.component.code``, and ``code`` is
# ``Observation.code``; Patient ``phonetic`` and ``name`` are both ``Patient.name``. Their common
# values are indexed once, under the contained parameter, and a search by the larger one reads the
# rows of both (``param IN ('combo-code', 'code')``). That is a quarter of an Observation's index
# rows. Only standard R4 parameters take part, so the layout does not change when a deployment adds
# or removes custom parameters (rows written under one layout stay readable under the next).
# The common ``_``-parameters keep their own rows (system search and site confinement read them by code).
#
# Reference parameters share another way. Forty-seven R4 parameters are another reference
# parameter's references of one type: Observation ``patient`` is ``Observation.subject.where(resolve()
# is Patient)``. ``resolve() is T`` is decided from the reference's own text at write time, the same
# way the stored ``target_type`` is, so ``patient``'s rows are exactly ``subject``'s rows of type
# Patient: they are not written, and everything that reads ``patient`` (search, chains, ``_has``,
# includes, compartments) reads ``subject`` rows with ``target_type = 'Patient'`` instead
# (``reference_subset``). Reference rows are the dearest index rows (random ids in their B-trees),
# and nearly every clinical resource has both parameters.

_SHAREABLE = frozenset({"token", "string", "date", "number", "quantity", "uri", "composite"})


@dataclass(frozen=True)
class _Layout:
    stored_under: Mapping[str, tuple[str, ...]]  # code -> (code, *contained codes)
    own_branches: Mapping[str, tuple[str, ...]]  # code -> the branches it indexes itself
    reference_subsets: Mapping[str, tuple[str, str]]  # code -> (reference code holding its rows, target type)


_OF_TYPE_BRANCH = re.compile(r"(?P<base>.+)\.where\(resolve\(\) is (?P<type>[A-Z][A-Za-z]+)\)")


def _reference_subsets(params: Mapping[str, SearchParam]) -> dict[str, tuple[str, str]]:
    """Reference parameters whose every branch is ``B.where(resolve() is T)`` (one ``T``) over
    exactly the branches of another, plain reference parameter."""
    plain = {
        frozenset(split_union(p.expression)): c for c, p in sorted(params.items())
        if p.type == "reference" and p.expression and not c.startswith("_") and "where(" not in p.expression
    }
    subsets: dict[str, tuple[str, str]] = {}
    for code, param in params.items():
        if param.type != "reference" or not param.expression:
            continue
        matches = [_OF_TYPE_BRANCH.fullmatch(branch) for branch in split_union(param.expression)]
        if not all(matches) or len({m["type"] for m in matches if m}) != 1:
            continue
        holder = plain.get(frozenset(m["base"] for m in matches if m))
        if holder is not None:
            subsets[code] = (holder, matches[0]["type"])  # type: ignore[index]
    return subsets


def _shape(param: SearchParam, params: Mapping[str, SearchParam]) -> tuple:
    """What must agree besides the branches for two parameters to give the same rows."""
    if param.type != "composite":
        return (param.type,)
    kinds = tuple(params[c].type if c in params else None for c, _ in param.components)
    return (param.type, kinds, tuple(expression for _, expression in param.components))


def _layout_of(params: Mapping[str, SearchParam]) -> _Layout:
    """Which parameters contain which, greedily from the smallest: a parameter that contains
    another is never itself contained (its own rows are not all of its values)."""
    branches = {
        c: tuple(split_union(p.expression)) for c, p in params.items() if p.expression and not c.startswith("_")
    }
    order = sorted(
        (c for c, p in params.items() if c in branches and p.type in _SHAREABLE), key=lambda c: (len(branches[c]), c)
    )
    whole = {c: frozenset(branches[c]) for c in order}
    shape = {c: _shape(params[c], params) for c in order}
    stored: dict[str, tuple[str, ...]] = {}
    own: dict[str, tuple[str, ...]] = {}
    for code in order:
        mine = set(whole[code])
        contained: list[str] = []
        for other in order:
            theirs = whole[other]
            if other == code or other in own or shape[other] != shape[code] or not theirs <= mine \
                    or (theirs == whole[code] and other > code):
                continue
            contained.append(other)
            mine -= theirs
        if contained:
            stored[code] = (code, *contained)
            own[code] = tuple(b for b in branches[code] if b in mine)
    return _Layout(MappingProxyType(stored), MappingProxyType(own), MappingProxyType(_reference_subsets(params)))


_layouts: dict[str, tuple[Mapping[str, SearchParam], _Layout]] = {}


def _layout(resource_type: str) -> _Layout:
    """The layout of the standard parameters that are in force (a custom parameter that replaces
    a standard code takes that code out of the layout)."""
    params = params_for(resource_type)
    cached = _layouts.get(resource_type)
    if cached is None or cached[0] is not params:
        standard = _standard_params(resource_type)
        cached = (params, _layout_of({c: p for c, p in params.items() if standard.get(c) is p}))
        _layouts[resource_type] = cached
    return cached[1]


def stored_under(resource_type: str, code: str) -> tuple[str, ...]:
    """The ``param`` values of the index rows holding ``code``'s values on this type: ``code``
    itself, then the parameters it contains whole. Just ``(code,)`` for most parameters."""
    return _layout(resource_type).stored_under.get(code, (code,))


def reference_subsets(resource_type: str) -> Mapping[str, tuple[str, str]]:
    """Reference parameter code -> ``(holder, T)`` for the parameters whose rows are ``holder``'s
    rows of target type ``T`` and are not stored themselves (``patient`` → ``("subject", "Patient")``)."""
    return _layout(resource_type).reference_subsets


def reference_subset(resource_type: str, code: str) -> tuple[str, str] | None:
    """``reference_subsets(resource_type)`` of one code; None for a parameter with its own rows."""
    return reference_subsets(resource_type).get(code)


@cache
def _standard_layout(resource_type: str) -> _Layout:
    return _layout_of(_standard_params(resource_type))


def shares_rows(resource_type: str, code: str) -> bool:
    """Whether standard parameter ``code`` takes part in the shared layout (holds another's rows,
    or has its rows held): a custom parameter that replaces it moves rows, so the type needs
    ``fhirfus reindex``."""
    layout = _standard_layout(resource_type)
    return (any(code in codes for codes in layout.stored_under.values())
            or code in layout.reference_subsets
            or any(code == holder for holder, _ in layout.reference_subsets.values()))


def own_expression(resource_type: str, param: SearchParam) -> str:
    """The part of ``param``'s expression it indexes under its own code (empty: none; its values
    are all another parameter's)."""
    own = _layout(resource_type).own_branches.get(param.code)
    return param.expression if own is None else " | ".join(own)


def resource_types() -> tuple[str, ...]:
    """Every resource type with standard parameters (all concrete R4 types), sorted."""
    return tuple(sorted(_load_json("search_parameters.json")))
