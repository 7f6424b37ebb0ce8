"""Search index values of a resource, computed when it is written.

Each search parameter of the resource's type (see :mod:`fhirfus.search.registry`)
is evaluated on the resource and its results are turned into typed index
values that the storage layer writes to its token, string, date, reference,
number, quantity and uri tables (composites combine several of those).

Why two evaluators: general FHIRPath evaluation dominates write time on other
servers, yet almost every R4 search expression is a plain path
(``Observation.subject``, ``(Observation.effective as dateTime)``, ``X.a | X.b``)
or a path with a cheap filter (``.where(resolve() is Patient)``,
``.where(system='email')``).  Those are compiled once into dictionary lookups
(choice types resolved with the R4 model that ships with fhirpathpy); anything
else is compiled once with ``fhirpathpy``.  ``resolve() is T`` never loads the
target: at write time the reference's own type prefix is the answer, so
``urn:uuid:`` references must be rewritten to ``Type/id`` before indexing.

``x as T`` on several items filters them by type (as fhirpath.js and the other
servers do; R4 expressions such as ``Observation.component.value as Quantity``
rely on it), where fhirpathpy raises; the ``fast=False`` mode therefore yields
nothing for such parameters on such resources.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from fhirfus.fhir.dates import UTC_MAX, UTC_MIN, parse_date_range
from fhirfus.fhir.references import reference_target
from fhirfus.fhirpath.paths import (
    Evaluator,
    compile_fhirpath,
    compile_path,
    fhirpath_evaluator,
    fhirpath_on_node,
    root_keys,
    split_union,
)
from fhirfus.search.registry import SearchParam, own_expression, params_for

log = logging.getLogger(__name__)


MONEY_SYSTEM = "urn:iso:std:iso:4217"


# --------------------------------------------------------------------------- values
#
# Named tuples rather than frozen dataclasses: an Observation yields about ten of them and a bulk
# write millions, and a tuple is built, hashed and compared in C (a frozen dataclass sets each
# field through ``object.__setattr__`` and hashes in Python).


class TokenValue(NamedTuple):
    """A code-like value: ``system|code`` plus the text the ``:text`` modifier searches."""

    param: str
    system: str | None
    code: str | None
    display_text: str | None


class StringValue(NamedTuple):
    """A string; ``normalized`` (lower case, accents removed) serves default and ``:contains`` search."""

    param: str
    normalized: str
    exact: str


class DateValue(NamedTuple):
    """A half-open UTC range ``[low, high)`` (see :mod:`fhirfus.fhir.dates`)."""

    param: str
    low: datetime
    high: datetime


class ReferenceValue(NamedTuple):
    """A reference; type and id are known for ``Type/id`` references, ``url`` is always kept."""

    param: str
    target_type: str | None
    target_id: str | None
    url: str
    #: ``Reference.identifier`` (searched with the ``:identifier`` modifier); a reference may
    #: carry only an identifier, then ``url`` is empty.
    identifier_system: str | None = None
    identifier_value: str | None = None


class NumberValue(NamedTuple):
    """A decimal number, kept exact."""

    param: str
    value: Decimal


class QuantityValue(NamedTuple):
    """A Quantity (or Money, with the ISO 4217 system and the currency as code)."""

    param: str
    value: Decimal
    system: str | None
    code: str | None
    unit: str | None


class UriValue(NamedTuple):
    """A URI, matched exactly (or by prefix with ``:below``)."""

    param: str
    value: str


IndexValue = TokenValue | StringValue | DateValue | ReferenceValue | NumberValue | QuantityValue | UriValue


class CompositeValue(NamedTuple):
    """One combination of component values taken from the same element (e.g. code + value)."""

    param: str
    components: tuple[IndexValue, ...]


@dataclass
class IndexValues:
    """Everything one resource contributes to the search index, grouped by table."""

    tokens: list[TokenValue] = field(default_factory=list)
    strings: list[StringValue] = field(default_factory=list)
    dates: list[DateValue] = field(default_factory=list)
    references: list[ReferenceValue] = field(default_factory=list)
    numbers: list[NumberValue] = field(default_factory=list)
    quantities: list[QuantityValue] = field(default_factory=list)
    uris: list[UriValue] = field(default_factory=list)
    composites: list[CompositeValue] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(getattr(self, f.name)) for f in fields(self))


_BUCKET_NAMES = tuple(f.name for f in fields(IndexValues))

# Which IndexValues list each search parameter type fills.
_BUCKETS = {
    "token": "tokens",
    "string": "strings",
    "date": "dates",
    "reference": "references",
    "number": "numbers",
    "quantity": "quantities",
    "uri": "uris",
    "composite": "composites",
}


# --------------------------------------------------------------------------- conversions


def normalize_string(text: str) -> str:
    """Lower case without accents, so ``Müller`` and ``muller`` index and search alike."""
    if text.isascii():  # NFKD leaves ASCII alone: skip the per-character walk
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def _text(value: Any) -> str | None:
    """A non-empty string, or None (FHIR forbids empty strings; JSON may still carry them)."""
    return value if isinstance(value, str) and value else None


def _decimal(value: Any) -> Decimal | None:
    """A JSON number as an exact Decimal (floats through their shortest repr)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            return None
    return None


def _to_tokens(param: str, value: Any) -> list[TokenValue]:
    """code/string/uri/id, boolean, Coding, CodeableConcept, Identifier, ContactPoint."""
    if isinstance(value, bool):
        return [TokenValue(param, None, "true" if value else "false", None)]
    if isinstance(value, str):
        return [TokenValue(param, None, value, None)] if value else []
    if isinstance(value, (int, Decimal)):
        return [TokenValue(param, None, str(value), None)]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and not value.keys() - {"text", "id", "extension"}):
        return _codeable_concept_tokens(param, value)
    if isinstance(value.get("value"), str):
        return _identifier_token(param, value)
    if "code" in value or "system" in value:
        return [TokenValue(param, _text(value.get("system")), _text(value.get("code")), _text(value.get("display")))]
    return []


def _codeable_concept_tokens(param: str, concept: dict[str, Any]) -> list[TokenValue]:
    """One token per coding, each carrying the concept's text (or the coding's display).

    ``:text`` searches CodeableConcept.text *and* Coding.display (R4 search, token modifiers), so
    a coding whose display differs from the concept's text gets a second token carrying it.
    """
    text = _text(concept.get("text"))
    codings = [c for c in concept.get("coding") or () if isinstance(c, dict)]
    tokens = []
    for coding in codings:
        system, code, display = _text(coding.get("system")), _text(coding.get("code")), _text(coding.get("display"))
        tokens.append(TokenValue(param, system, code, text or display))
        if text and display and display != text:
            tokens.append(TokenValue(param, system, code, display))
    if not tokens and text:
        tokens.append(TokenValue(param, None, None, text))
    return tokens


def _identifier_token(param: str, value: dict[str, Any]) -> list[TokenValue]:
    """Identifier (``system|value``) or ContactPoint (value only).

    They share the ``system``/``value`` shape; an Identifier system is an
    absolute URI while a ContactPoint system is a bare code (phone, email, ...).
    """
    system = _text(value.get("system"))
    if system is not None and ":" not in system:
        return [TokenValue(param, None, value["value"], None)]
    identifier_type = value.get("type")
    if not isinstance(identifier_type, dict):
        return [TokenValue(param, system, value["value"], None)]
    tokens = [TokenValue(param, system, value["value"], _text(identifier_type.get("text")))]
    for coding in identifier_type.get("coding") or ():
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            # ``identifier:of-type=type-system|type-code|value``, one row per type coding
            tokens.append(TokenValue(f"{param}{OF_TYPE}", _text(coding.get("system")), f"{coding['code']}|{value['value']}", None))
    return tokens


#: Suffix of the index rows ``:of-type`` searches: an Identifier's type coding with its value.
OF_TYPE = ":of-type"


# HumanName and Address parts that are searched on their own.
_STRING_PARTS = ("text", "family", "given", "prefix", "suffix", "line", "city", "district", "state", "postalCode", "country")
_NAME_KEYS = ("family", "given", "prefix", "suffix")


def _to_strings(param: str, value: Any) -> list[StringValue]:
    """Plain strings, HumanName (parts plus the whole name) and Address (parts and text)."""
    if isinstance(value, str):
        texts: list[str] = [value]
    elif isinstance(value, dict):
        texts = _string_parts(value)
    else:
        return []
    return [StringValue(param, normalize_string(t), t) for t in texts if t]


def _string_parts(value: dict[str, Any]) -> list[str]:
    """The searchable strings of a HumanName or Address (or any element with ``text``)."""
    parts: list[str] = []
    for key in _STRING_PARTS:
        parts.extend(_as_list(value.get(key)))
    if any(key in value for key in _NAME_KEYS):
        parts.append(" ".join(part for key in ("prefix", "given", "family", "suffix") for part in _as_list(value.get(key))))
    return parts


def _as_list(value: Any) -> list[str]:
    """A string or list of strings as a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _to_dates(param: str, value: Any) -> list[DateValue]:
    """date/dateTime/instant, Period (open ends unbounded) and Timing (events, else bounds)."""
    if isinstance(value, dict):
        if "event" in value or "repeat" in value:
            return _timing_dates(param, value)
        if "start" in value or "end" in value:
            return _period_dates(param, value)
        return []
    text = value if isinstance(value, str) else str(value)
    try:
        low, high = parse_date_range(text)
    except ValueError:
        return []
    return [DateValue(param, low, high)]


def _period_dates(param: str, period: dict[str, Any]) -> list[DateValue]:
    """A Period as one range; a missing start or end leaves that side open."""
    try:
        low = parse_date_range(period["start"])[0] if "start" in period else UTC_MIN
        high = parse_date_range(period["end"])[1] if "end" in period else UTC_MAX
    except (TypeError, ValueError):
        return []
    return [DateValue(param, low, high)]


def _timing_dates(param: str, timing: dict[str, Any]) -> list[DateValue]:
    """Timing: each event, or the repeat bounds when there are no events."""
    events = timing.get("event")
    if isinstance(events, list) and events:
        return [d for event in events for d in _to_dates(param, event)]
    repeat = timing.get("repeat")
    bounds = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
    return _period_dates(param, bounds) if isinstance(bounds, dict) else []


def _to_references(param: str, value: Any) -> list[ReferenceValue]:
    """Reference elements (literal ``reference`` only) and canonical/uri strings (url only)."""
    if isinstance(value, str):
        return [ReferenceValue(param, None, None, value)] if value else []
    if not isinstance(value, dict):
        return []
    identifier: dict[str, Any] = value["identifier"] if isinstance(value.get("identifier"), dict) else {}
    system, code = _text(identifier.get("system")), _text(identifier.get("value"))
    url = _text(value.get("reference"))
    if not url and not code:
        return []
    target_type, target_id = reference_target(url) if url else (None, None)
    return [ReferenceValue(param, target_type, target_id, url or "", system, code)]


def _to_numbers(param: str, value: Any) -> list[NumberValue]:
    """integer/decimal values."""
    number = _decimal(value)
    return [] if number is None else [NumberValue(param, number)]


def _to_quantities(param: str, value: Any) -> list[QuantityValue]:
    """Quantity and its profiles (Age, Duration, ...) and Money; Range and SampledData are skipped."""
    if not isinstance(value, dict):
        return []
    number = _decimal(value.get("value"))
    if number is None:
        return []
    if "currency" in value:
        return [QuantityValue(param, number, MONEY_SYSTEM, _text(value.get("currency")), None)]
    return [QuantityValue(param, number, _text(value.get("system")), _text(value.get("code")), _text(value.get("unit")))]


def _to_uris(param: str, value: Any) -> list[UriValue]:
    """uri/url/canonical/oid/uuid strings."""
    return [UriValue(param, value)] if isinstance(value, str) and value else []


Converter = Callable[[str, Any], list[Any]]

_CONVERTERS: dict[str, Converter] = {
    "token": _to_tokens,
    "string": _to_strings,
    "date": _to_dates,
    "reference": _to_references,
    "number": _to_numbers,
    "quantity": _to_quantities,
    "uri": _to_uris,
}


# --------------------------------------------------------------------------- plans

CompositeEvaluator = Callable[[dict[str, Any]], list[CompositeValue]]


# code, IndexValues list name, evaluator, converter: a tuple, unpacked in the hot loop.
ParamPlan = tuple[str, str, Evaluator, Converter]


#: Most shapes of a resource type are few (the same feed sends the same keys): this many are
#: remembered per type before the memory starts again.
_SHAPES_KEPT = 4096


Gate = frozenset[str] | None  # the top-level keys a parameter reads (None: always evaluated)


@dataclass(frozen=True)
class _Plan:
    """Everything compiled for one resource type, for one evaluation mode: each parameter and
    composite with its gate; ``for_shape`` picks what a resource with given keys needs, once per shape."""

    params: tuple[tuple[ParamPlan, Gate], ...]
    composites: tuple[tuple[CompositeEvaluator, Gate], ...]
    _shapes: dict[tuple[str, ...], tuple[tuple[ParamPlan, ...], tuple[CompositeEvaluator, ...]]] = field(
        default_factory=dict, compare=False, repr=False)

    def for_shape(self, keys: tuple[str, ...]) -> tuple[tuple[ParamPlan, ...], tuple[CompositeEvaluator, ...]]:
        """The parameters and composites a resource with these top-level keys can yield values for."""
        chosen = self._shapes.get(keys)
        if chosen is None:
            present = frozenset(keys)
            chosen = (
                tuple(p for p, gate in self.params if gate is None or not gate.isdisjoint(present)),
                tuple(c for c, gate in self.composites if gate is None or not gate.isdisjoint(present)),
            )
            if len(self._shapes) >= _SHAPES_KEPT:
                self._shapes.clear()
            self._shapes[keys] = chosen
        return chosen


def _simple_plan(resource_type: str, param: SearchParam, fast: bool) -> ParamPlan | None:
    """Compile one non-composite parameter, preferring direct lookups."""
    convert = _CONVERTERS.get(param.type)
    if convert is None or not param.expression:
        return None
    compiled = compile_path(param.expression, resource_type, resource_type) if fast else None
    evaluate = compiled[0] if compiled is not None else fhirpath_evaluator(param.expression)
    return param.code, _BUCKETS[param.type], evaluate, convert


def _component_converters(param: SearchParam, params: Mapping[str, SearchParam]) -> list[tuple[str, Converter]] | None:
    """(code, converter) per component, from the types of the referenced parameters."""
    converters: list[tuple[str, Converter]] = []
    for code, _ in param.components:
        component = params.get(code)
        convert = _CONVERTERS.get(component.type) if component is not None else None
        if convert is None:
            return None
        converters.append((code, convert))
    return converters


def _convert_components(raws: list[list[Any]], converters: list[tuple[str, Converter]]) -> list[list[Any]]:
    """Index values of each component, converted only once every component has a raw value."""
    return [[v for raw in values for v in convert(code, raw)] for values, (code, convert) in zip(raws, converters, strict=False)]


def _combine(param: str, per_component: list[list[Any]]) -> list[CompositeValue]:
    """Every combination of one value per component (none if a component is empty)."""
    return [CompositeValue(param, tuple(combo)) for combo in itertools.product(*per_component)]


def _fast_composite(resource_type: str, param: SearchParam, converters: list[tuple[str, Converter]]) -> CompositeEvaluator | None:
    """Composite by direct lookups: branch nodes, then components relative to each node."""
    branches: list[tuple[Evaluator, list[Evaluator]]] = []
    for branch in split_union(param.expression):
        compiled = compile_path(branch, resource_type, resource_type)
        if compiled is None or compiled[1][0] is None:
            return None
        base = compiled[1][0]
        components = [compile_path(expr, resource_type, base) for _, expr in param.components]
        if any(c is None for c in components):
            return None
        branches.append((compiled[0], [c[0] for c in components if c is not None]))

    def evaluate(resource: dict[str, Any]) -> list[CompositeValue]:
        values: list[CompositeValue] = []
        for select, components in branches:
            for node in select(resource, resource):
                raws = [component(node, resource) for component in components]
                if all(raws):
                    values.extend(_combine(param.code, _convert_components(raws, converters)))
        return values

    return evaluate


def _fhirpath_composite(param: SearchParam, converters: list[tuple[str, Converter]]) -> CompositeEvaluator:
    """Composite with fhirpathpy: branch by branch, so nodes keep their model path."""
    try:
        branches = [compile_fhirpath(branch, raw=True) for branch in split_union(param.expression)]
    except Exception as exc:
        log.warning("search expression %r is not valid FHIRPath: %s", param.expression, exc)
        branches = []

    def evaluate(resource: dict[str, Any]) -> list[CompositeValue]:
        values: list[CompositeValue] = []
        for select in branches:
            try:
                nodes = select(resource, {"resource": resource})
            except Exception as exc:
                log.debug("fhirpathpy could not evaluate %r: %s", param.expression, exc)
                continue
            for node in nodes:
                raws = [fhirpath_on_node(expr, node, resource) for _, expr in param.components]
                if all(raws):
                    values.extend(_combine(param.code, _convert_components(raws, converters)))
        return values

    return evaluate


def _composite_plan(resource_type: str, param: SearchParam, params: Mapping[str, SearchParam], fast: bool) -> CompositeEvaluator | None:
    """Compile a composite parameter, preferring direct lookups."""
    converters = _component_converters(param, params)
    if converters is None or not param.expression:
        return None
    compiled = _fast_composite(resource_type, param, converters) if fast else None
    return compiled or _fhirpath_composite(param, converters)


#: Parameters every stored resource answers from its own columns (``res_id``, ``last_updated`` of
#: the resources table): index rows for them would cost two rows per write and serve no query.
NOT_EXTRACTED = frozenset({"_id", "_lastUpdated"})


def _build_plan(resource_type: str, params: Mapping[str, SearchParam], fast: bool) -> _Plan:
    """Compile every parameter of a resource type, each on the part of its expression it indexes
    under its own code (``searchparams.own_expression``: ``combo-code`` leaves ``Observation.code``
    to ``code``)."""
    own = [
        dataclasses.replace(p, expression=own_expression(resource_type, p)) for p in params.values()
        if p.code not in NOT_EXTRACTED
    ]
    simple = [(_simple_plan(resource_type, p, fast), _gate(resource_type, p, fast)) for p in own if p.type != "composite"]
    composites = [
        (_composite_plan(resource_type, p, params, fast), _gate(resource_type, p, fast)) for p in own if p.type == "composite"
    ]
    return _Plan(
        params=tuple((plan, gate) for plan, gate in simple if plan is not None),
        composites=tuple((plan, gate) for plan, gate in composites if plan is not None),
    )


def _gate(resource_type: str, param: SearchParam, fast: bool) -> Gate:
    """Top-level keys that decide whether ``param`` is evaluated (fhirpathpy mode: always)."""
    if not fast or not param.expression:
        return None
    if param.type != "composite":
        return root_keys(param.expression, resource_type)
    keys: set[str] = set()
    for branch in split_union(param.expression):
        gate = _component_gate(resource_type, param) if branch == resource_type else root_keys(branch, resource_type)
        if gate is None:
            return None
        keys |= gate
    return frozenset(keys)


def _component_gate(resource_type: str, param: SearchParam) -> Gate:
    """A composite over the resource itself (``code-value-quantity`` on ``Observation``) yields only
    where every component does, so any one component's keys gate it: the last one's (the value,
    which most resources lack) when it has keys of its own. Three of an Observation's four
    code-value composites are skipped that way."""
    for _, expression in reversed(param.components):
        keys = root_keys(expression, resource_type)
        if keys is not None:
            return keys
    return None


_plans: dict[tuple[str, bool], tuple[Mapping[str, SearchParam], _Plan]] = {}


def _plan_for(resource_type: str, fast: bool) -> _Plan:
    """The cached plan, rebuilt when the type's parameters changed (custom parameters)."""
    params = params_for(resource_type)
    cached = _plans.get((resource_type, fast))
    if cached is not None and cached[0] is params:
        return cached[1]
    plan = _build_plan(resource_type, params, fast)
    _plans[(resource_type, fast)] = (params, plan)
    return plan


# --------------------------------------------------------------------------- entry point


def extract_index_values(resource: dict[str, Any], *, fast: bool = True) -> IndexValues:
    """Evaluate every search parameter of the resource's type into index values.

    ``fast=False`` evaluates everything with fhirpathpy (kept to check the
    fast path against, and to measure it).  Values that do not fit their
    parameter's type (a malformed date, a token from a Range) are skipped,
    never raised: indexing must not reject what validation let through.
    Duplicates are removed, first occurrence kept.
    """
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(resource_type, str):
        return IndexValues()
    params, composite_plans = _plan_for(resource_type, fast).for_shape(tuple(resource))
    buckets: dict[str, list[Any]] = {name: [] for name in _BUCKET_NAMES}
    for code, bucket, evaluate, convert in params:
        raws = evaluate(resource, resource)
        if raws:
            out = buckets[bucket]
            for raw in raws:
                out.extend(convert(code, raw))
    composites = buckets["composites"]
    for composite in composite_plans:
        composites.extend(composite(resource))
    return IndexValues(**{name: _unique(values) for name, values in buckets.items()})


def _unique(values: list[Any]) -> list[Any]:
    """Drop repeated values (a union may select the same element twice), keeping order."""
    return list(dict.fromkeys(values)) if len(values) > 1 else values
