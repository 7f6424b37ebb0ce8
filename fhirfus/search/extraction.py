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
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache
from typing import Any, NamedTuple

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models as _fhirpath_models
from fhirpathpy.parser import parse as _fhirpath_parse

from fhirfus.fhir.dates import UTC_MAX, UTC_MIN, parse_date_range
from fhirfus.search.registry import (
    SearchParam,
    own_expression,
    params_for,
    resource_types,
    split_top_level,
    split_union,
)

log = logging.getLogger(__name__)

_MODEL: dict[str, Any] = _fhirpath_models["r4"]
_CHOICES: Mapping[str, list[str]] = _MODEL["choiceTypePaths"]
_PATH_TYPES: Mapping[str, str] = _MODEL["path2Type"]
_PARENTS: Mapping[str, str] = _MODEL["type2Parent"]
_ELSEWHERE: Mapping[str, str] = _MODEL["pathsDefinedElsewhere"]

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


_REFERENCE_RE = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


@lru_cache(maxsize=16_384)
def reference_target(reference: str) -> tuple[str | None, str | None]:
    """Type and id of a literal reference (``Patient/1``, ``http://x/fhir/Patient/1/_history/2``).

    ``urn:uuid:``/``urn:oid:`` and ``#contained`` references, and URLs whose
    second-to-last segment is not a resource type, have none.

    Remembered: a resource's references are parsed two or three times while it is indexed (the
    ``where(resolve() is T)`` filters, then the values), and a patient's resources all name it.
    """
    if reference.startswith(("urn:", "#")):
        return None, None
    match = _REFERENCE_RE.search(reference)
    if match is None or match["type"] not in _known_types():
        return None, None
    return match["type"], match["id"]


@cache
def _known_types() -> frozenset[str]:
    """Resource type names, to tell ``.../Patient/1`` from any URL with two segments."""
    return frozenset(resource_types())


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


# --------------------------------------------------------------------------- fast path compiler

Evaluator = Callable[[Any, dict[str, Any]], list[Any]]
Step = Callable[[list[Any], dict[str, Any]], list[Any]]


_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_AS_FUNCTION = re.compile(r"(?:as|ofType)\(\s*([A-Za-z]+)\s*\)")
_WHERE_RESOLVE = re.compile(r"where\(\s*resolve\(\)\s+is\s+([A-Z][A-Za-z]+)\s*\)")
_WHERE_EQUALS = re.compile(r"where\(\s*([a-z][A-Za-z0-9]*)\s*=\s*'([^'\\]*)'\s*\)")
_AS_OPERATOR = re.compile(r"(?P<path>.+?)\s+as\s+(?P<type>[A-Za-z]+)")


def _matching_paren(text: str) -> int | None:
    """Index of the parenthesis closing the one that opens ``text``."""
    depth, quoted = 0, False
    for index, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth == 0:
                return index
    return None


def _parse_branch(text: str) -> list[tuple[str, ...]] | None:
    """Parse one union branch into abstract steps, or None when it is not a plain path.

    Steps: ``("name", n)``, ``("root",)`` for ``%resource``, ``("as", T)`` for
    ``as T``/``as(T)``/``ofType(T)``, ``("where_ref", T)``, ``("where_eq", f, v)``.
    """
    text = text.strip()
    if text.startswith("("):
        close = _matching_paren(text)
        if close is None:
            return None
        inner, rest = _parse_branch(text[1:close]), text[close + 1 :].strip()
        if inner is None or (rest and not rest.startswith(".")):
            return None
        tail = _parse_segments(rest[1:]) if rest else []
        return None if tail is None else inner + tail
    operator = _AS_OPERATOR.fullmatch(text)
    if operator is not None:
        head = _parse_branch(operator["path"])
        return None if head is None else [*head, ("as", operator["type"])]
    return _parse_segments(text)


def _parse_segments(text: str) -> list[tuple[str, ...]] | None:
    """Parse ``a.b.where(...).as(T)`` into steps, or None on anything else."""
    steps: list[tuple[str, ...]] = []
    for position, segment in enumerate(s.strip() for s in split_top_level(text, ".")):
        step = _parse_segment(segment, first=position == 0)
        if step is None:
            return None
        steps.append(step)
    return steps


def _parse_segment(segment: str, first: bool) -> tuple[str, ...] | None:
    """One dotted segment as a step."""
    if _IDENTIFIER.fullmatch(segment) and segment not in ("as", "is"):
        return ("name", segment)
    if first and segment == "%resource":
        return ("root",)
    for pattern, kind in ((_AS_FUNCTION, "as"), (_WHERE_RESOLVE, "where_ref"), (_WHERE_EQUALS, "where_eq")):
        match = pattern.fullmatch(segment)
        if match is not None:
            return (kind, *match.groups())
    return None


def _capitalized(type_name: str) -> str:
    """``dateTime`` -> ``DateTime``: choice suffixes and type names compared alike."""
    return type_name[:1].upper() + type_name[1:]


def _is_a(type_name: str, wanted: str) -> bool:
    """Whether ``type_name`` is ``wanted`` or derives from it (Age is a Quantity)."""
    target = _capitalized(wanted)
    current: str | None = type_name
    while current:
        if _capitalized(current) == target:
            return True
        current = _PARENTS.get(current) or _PARENTS.get(current[:1].lower() + current[1:])
    return False


def _element_path(parent: str, name: str) -> str:
    """Model path of a child element, following ``contentReference`` reuse."""
    path = f"{parent}.{name}"
    return _ELSEWHERE.get(path, path)


def _type_path(type_name: str | None, element_path: str) -> str | None:
    """Where to look up the children of an element: its complex type, its own path
    (backbone elements), or None for primitives and abstract Resource (unknown children)."""
    if type_name is None:
        return element_path
    if type_name[:1].islower() or type_name.startswith("System.") or type_name == "Resource":
        return None
    if type_name[:1].lower() + type_name[1:] in _PARENTS and type_name not in _PARENTS:
        return None
    return type_name


class _NotFast(Exception):
    """The expression needs real FHIRPath evaluation."""


Op = tuple[Any, ...]


def _compile_branch(text: str, resource_type: str, base: str) -> tuple[list[Op], str | None]:
    """Compile one union branch to lookup operations; also return the type path of its results.

    ``base`` is the model path the branch is evaluated from: the resource type,
    or a composite's element path (``Observation.component``) for components.
    Operations: ``("field", keys)``, ``("root",)``, ``("where_ref", T)``,
    ``("where_eq", name, literal)``, ``("nothing",)``.
    """
    parsed = _parse_branch(text)
    if not parsed:
        raise _NotFast(text)
    path: str | None = base
    if parsed[0][0] == "name" and parsed[0][1][:1].isupper():
        root = parsed.pop(0)[1]
        if base != resource_type:
            raise _NotFast(text)
        if root not in (resource_type, "Resource", "DomainResource"):
            return [("nothing",)], None
    ops: list[Op] = []
    index = 0
    while index < len(parsed):
        step = parsed[index]
        following = parsed[index + 1] if index + 1 < len(parsed) else None
        wanted = following[1] if following is not None and following[0] == "as" else None
        if step[0] == "root":
            ops.append(step)
            path = resource_type
        elif step[0] == "name":
            if path is None:
                raise _NotFast(text)
            keys, path = _field_keys(path, step[1], wanted, text)
            ops.append(("field", keys))
            index += 1 if wanted is not None else 0
        elif step[0] in ("where_ref", "where_eq"):
            ops.append(step)
        else:
            raise _NotFast(text)
        index += 1
    return ops, path


def _field_keys(parent: str, name: str, wanted: str | None, text: str) -> tuple[tuple[str, ...], str | None]:
    """JSON keys holding element ``name`` (``value`` -> ``valueQuantity``...) and its type path."""
    element = _element_path(parent, name)
    choices = _CHOICES.get(element)
    if choices:
        matching = [c for c in choices if wanted is None or _is_a(c, wanted)]
        keys = tuple(name + c for c in matching)
        if len(matching) == 1:
            return keys, _type_path(matching[0], element)
        return keys, None
    element_type = _PATH_TYPES.get(element)
    if wanted is not None and not (element_type and _is_a(element_type, wanted)):
        raise _NotFast(text)
    return (name,), _type_path(element_type, element)


def _nothing(node: Any, root: dict[str, Any]) -> list[Any]:
    """A branch rooted at another resource type selects nothing."""
    return []


def _itself(node: Any, root: dict[str, Any]) -> list[Any]:
    """A branch that is just the type name (``Observation``) selects the node itself."""
    return [node]


def _run(ops: list[Op]) -> Evaluator:
    """Build the evaluator of one branch; plain key paths get a dedicated loop."""
    if ops == [("nothing",)]:
        return _nothing
    if not ops:
        return _itself
    if all(op[0] == "field" and len(op[1]) == 1 for op in ops):
        return _key_path(tuple(op[1][0] for op in ops))
    steps = [_STEP_BUILDERS[op[0]](*op[1:]) for op in ops]

    def evaluate(node: Any, root: dict[str, Any]) -> list[Any]:
        current = [node]
        for step in steps:
            current = step(current, root)
            if not current:
                break
        return current

    return evaluate


def _key_path(keys: tuple[str, ...]) -> Evaluator:
    """``a.b.c`` as nested ``dict.get`` calls, flattening arrays and skipping nulls.

    This is what almost every search expression reduces to, so it is kept tight.
    """
    first, rest = keys[0], keys[1:]

    def evaluate(node: Any, root: dict[str, Any]) -> list[Any]:
        value = node.get(first) if isinstance(node, dict) else None
        if value is None:
            return []
        current = value if isinstance(value, list) else [value]
        for key in rest:
            found: list[Any] = []
            for item in current:
                if isinstance(item, dict):
                    child = item.get(key)
                    if isinstance(child, list):
                        found.extend(child)
                    elif child is not None:
                        found.append(child)
            if not found:
                return found
            current = found
        return [v for v in current if v is not None] if None in current else current

    return evaluate


def _root_step() -> Step:
    """``%resource``: restart from the resource being indexed."""

    def step(nodes: list[Any], root: dict[str, Any]) -> list[Any]:
        return [root]

    return step


def _field_step(keys: tuple[str, ...]) -> Step:
    """Child lookup over a collection (several keys for a choice element)."""

    def step(nodes: list[Any], root: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for node in nodes:
            if not isinstance(node, dict):
                continue
            for key in keys:
                value = node.get(key)
                if isinstance(value, list):
                    out.extend(v for v in value if v is not None)
                elif value is not None:
                    out.append(value)
        return out

    return step


def _where_reference_step(target_type: str) -> Step:
    """``where(resolve() is T)`` decided from the reference string, without resolving it."""

    def step(nodes: list[Any], root: dict[str, Any]) -> list[Any]:
        return [n for n in nodes if _reference_type(n) == target_type]

    return step


def _reference_type(node: Any) -> str | None:
    """Type a Reference (or canonical string) points to, when its text says so."""
    reference = node.get("reference") if isinstance(node, dict) else node
    return reference_target(reference)[0] if isinstance(reference, str) else None


def _where_equals_step(name: str, literal: str) -> Step:
    """``where(system='email')``: keep elements whose child equals a string literal."""

    def step(nodes: list[Any], root: dict[str, Any]) -> list[Any]:
        return [n for n in nodes if isinstance(n, dict) and n.get(name) == literal]

    return step


_STEP_BUILDERS: dict[str, Callable[..., Step]] = {
    "field": _field_step,
    "root": _root_step,
    "where_ref": _where_reference_step,
    "where_eq": _where_equals_step,
}


def _union(evaluators: list[Evaluator]) -> Evaluator:
    """The union of branches (duplicates are removed later, on index values)."""
    if len(evaluators) == 1:
        return evaluators[0]

    def evaluate(node: Any, root: dict[str, Any]) -> list[Any]:
        return [value for evaluator in evaluators for value in evaluator(node, root)]

    return evaluate


@cache
def _compile_fast(expression: str, resource_type: str, base: str) -> tuple[Evaluator, tuple[str | None, ...]] | None:
    """Compile a whole expression to direct lookups, or None if any branch needs FHIRPath.

    Also returns each branch's result type path (composites evaluate their
    components from there).
    """
    flag = _PRESENT_AND_NOT_FALSE.fullmatch(expression)
    if flag is not None:
        return _present_and_not_false(flag["path"], resource_type, base)
    compiled = _branches(expression, resource_type, base)
    if not compiled:
        return None
    return _union([_run(ops) for ops, _ in compiled]), tuple(path for _, path in compiled)


@cache
def _branches(expression: str, resource_type: str, base: str) -> tuple[tuple[list[Op], str | None], ...] | None:
    """Each union branch compiled to lookup operations with its type path; None if one needs FHIRPath."""
    try:
        return tuple(_compile_branch(b, resource_type, base) for b in split_union(expression))
    except _NotFast:
        return None


#: ``Patient.deceased.exists() and Patient.deceased != false`` (R4's ``deceased`` token): the
#: one shape of boolean test among the official expressions of the types fhirfus stores.
_PRESENT_AND_NOT_FALSE = re.compile(r"(?P<path>[A-Za-z][\w.]*)\.exists\(\) and (?P=path) != false")


def _present_and_not_false(path: str, resource_type: str, base: str) -> tuple[Evaluator, tuple[str | None, ...]] | None:
    """``path.exists() and path != false`` as one boolean: true for any value except ``false``."""
    inner = _compile_fast(path, resource_type, base)
    if inner is None:
        return None
    select = inner[0]

    def evaluate(node: Any, root: dict[str, Any]) -> list[Any]:
        values = select(node, root)
        return [bool(values) and values != [False]]

    return evaluate, (None,)


@cache
def root_keys(expression: str, resource_type: str) -> frozenset[str] | None:
    """The top-level JSON keys an expression can select anything from, or None if it may yield
    values without any of them (FHIRPath, ``%resource``, the ``deceased`` flag that indexes
    ``false`` for an absent element).

    An Observation has ten keys and its type forty parameters: a parameter none of whose keys
    the resource has cannot yield a value, so it is not evaluated at all.
    """
    compiled = None if _PRESENT_AND_NOT_FALSE.fullmatch(expression) else _branches(expression, resource_type, resource_type)
    if compiled is None:
        return None
    keys: set[str] = set()
    for ops, _ in compiled:
        if ops == [("nothing",)]:
            continue
        if not ops or ops[0][0] != "field":
            return None
        keys.update(ops[0][1])
    return frozenset(keys)


def selects_identifiers(resource_type: str, expression: str) -> bool:
    """Whether the expression selects Identifier elements (what ``:of-type`` applies to)."""
    compiled = _compile_fast(expression, resource_type, resource_type)
    return compiled is not None and "Identifier" in compiled[1]


def uses_fast_path(resource_type: str, expression: str) -> bool:
    """Whether ``expression`` is evaluated by direct lookups rather than fhirpathpy."""
    return _compile_fast(expression, resource_type, resource_type) is not None


# --------------------------------------------------------------------------- fhirpathpy


def _resolve_by_type(inputs: list[Any]) -> list[Any]:
    """fhirpathpy ``resolve()``: a stub of the target's type, enough for ``resolve() is T``."""
    resolved: list[Any] = []
    for item in inputs:
        target_type = _reference_type(item)
        if target_type is not None:
            resolved.append(ResourceNode.create_node({"resourceType": target_type}))
    return resolved


_FHIRPATH_FUNCTIONS = {"resolve": {"fn": _resolve_by_type, "arity": {0: []}}}
_OPTIONS: dict[str, Any] = {"userInvocationTable": _FHIRPATH_FUNCTIONS}
_RAW_OPTIONS: dict[str, Any] = {"userInvocationTable": _FHIRPATH_FUNCTIONS, "returnRawData": True}


@cache
def _compile_fhirpath(expression: str, raw: bool = False) -> Callable[..., list[Any]]:
    """fhirpathpy's compiled form of an expression (parsed once per process)."""
    return fhirpathpy.compile(expression, _MODEL, _RAW_OPTIONS if raw else _OPTIONS)


@cache
def _parse_fhirpath(expression: str) -> dict[str, Any]:
    """fhirpathpy's parse tree, for evaluating components on nodes of a composite."""
    parsed: dict[str, Any] = _fhirpath_parse(expression)
    return parsed


def _fhirpath_evaluator(expression: str) -> Evaluator:
    """Evaluate with fhirpathpy; an expression it cannot parse or evaluate yields nothing."""
    try:
        compiled = _compile_fhirpath(expression)
    except Exception as exc:
        log.warning("search expression %r is not valid FHIRPath: %s", expression, exc)
        return _nothing

    def evaluate(node: Any, root: dict[str, Any]) -> list[Any]:
        try:
            return list(compiled(node, {"resource": root}))
        except Exception as exc:
            log.debug("fhirpathpy could not evaluate %r: %s", expression, exc)
            return []

    return evaluate


def _fhirpath_on_node(expression: str, node: ResourceNode, root: dict[str, Any]) -> list[Any]:
    """Evaluate a component expression with fhirpathpy on a node that knows its model path."""
    try:
        return list(fhirpathpy.apply_parsed_path(node, _parse_fhirpath(expression), {"resource": root}, _MODEL, _OPTIONS))
    except Exception as exc:
        log.debug("fhirpathpy could not evaluate component %r: %s", expression, exc)
        return []


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
    compiled = _compile_fast(param.expression, resource_type, resource_type) if fast else None
    evaluate = compiled[0] if compiled is not None else _fhirpath_evaluator(param.expression)
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
        compiled = _compile_fast(branch, resource_type, resource_type)
        if compiled is None or compiled[1][0] is None:
            return None
        base = compiled[1][0]
        components = [_compile_fast(expr, resource_type, base) for _, expr in param.components]
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
        branches = [_compile_fhirpath(branch, raw=True) for branch in split_union(param.expression)]
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
                raws = [_fhirpath_on_node(expr, node, resource) for _, expr in param.components]
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
