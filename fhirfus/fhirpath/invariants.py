"""The R4 core invariants evaluated on a resource: each constraint compiled once, run on every
element instance it sits on (``fhirfus.fhir.invariants.sites``).

Why this shape: a write checks a few dozen constraint instances, and interpreting each through
fhirpathpy costs tens of microseconds. So an expression is compiled to closures when the views'
compiler (``fhirpath.compiler``) covers it, and goes to the engine otherwise (or when the compiled
form cannot decide on this data). Most constraints read only a few named children of their
element; when the element has none of them, the result is the one computed once on an empty
element, and when it has them, the outcome of the same children seen before is reused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeGuard

import orjson
from fhirpathpy.engine.nodes import ResourceNode

from fhirfus.errors import Issue
from fhirfus.fhir.invariants import Constraint, Site, empty_elements, sites, unreferenced_contained
from fhirfus.fhirpath.compiler import ExpressionCompiler, Undecided, Unsupported
from fhirfus.fhirpath.engine import (
    STANDARD_VARIABLES,
    FhirPathEvaluationError,
    compile_expression,
    parse,
    reset_clock,
    to_python,
)

#: The one invariant of every element, checked natively (``fhir.invariants.empty_elements``).
ELE_1 = Constraint(
    "ele-1", "error", "All FHIR elements must have a @value or children",
    "hasValue() or (children().count() > id.count())", False, "Element",
)
#: Variables that read beyond the element itself.
_WIDE_VARIABLES = frozenset({"resource", "rootResource", "context"})
#: Outcomes remembered per (constraint, children read); cleared when full.
_KEPT = 50_000
#: Children larger than this are evaluated every time rather than remembered.
_KEY_MAX = 1024


@dataclass(frozen=True, slots=True)
class _Reads:
    """What an expression reads of its focus: the member names at the start of a path, or
    ``None`` when it reads the focus as a whole (``$this``, ``%resource``, ``children()``, ...)."""

    names: frozenset[str] | None


def _reads(ast: Mapping[str, Any]) -> _Reads:
    names: set[str] = set()
    stack = [ast]
    while stack:
        node = stack.pop()
        kind = node.get("type")
        if kind == "ThisInvocation":
            return _Reads(None)
        if kind == "ExternalConstant":
            name = "".join(str(c.get("text", "")) for c in node.get("children", ())).strip("`'")
            if name in _WIDE_VARIABLES:
                return _Reads(None)
        if kind == "InvocationTerm" and node["children"][0].get("type") == "FunctionInvocation":
            return _Reads(None)  # a function of the focus itself (or of a where() item: conservative)
        if kind == "Identifier":
            text = str(node.get("text", "")).strip("`")
            if text[:1].isupper():  # a type name (``Observation.code``, ``is Quantity``)
                return _Reads(None)
            names.add(text)
        stack.extend(node.get("children", ()))
    return _Reads(frozenset(names))


#: (focus value, its fhirpathpy type, the site) → result items as plain values.
Evaluator = Callable[[Any, str, Site], list]


def _engine_evaluator(text: str) -> Evaluator:
    expression = compile_expression(text)

    def run(value: Any, type_name: str, site: Site) -> list:
        node = ResourceNode.create_node(value, type_name)
        env = {
            **STANDARD_VARIABLES,
            "context": node,
            "resource": ResourceNode.create_node(site.resource, site.resource.get("resourceType")),
            "rootResource": ResourceNode.create_node(site.root, site.root.get("resourceType")),
        }
        return [to_python(item) for item in expression([node], env)]

    return run


def _range_ordered(value: Any, _type: str, _site: Site) -> list:
    """rng-2 (``low <= high``) for JSON Quantities: compared when both have a value in the same
    unit, otherwise not decidable (empty), as FHIRPath has it for incomparable quantities.
    fhirpathpy cannot compare two Quantity elements at all."""
    low, high = (value.get(end) if isinstance(value, dict) else None for end in ("low", "high"))
    if not isinstance(low, dict) or not isinstance(high, dict):
        return [True]
    least, most = low.get("value"), high.get("value")
    if not _number(least) or not _number(most):
        return []
    unit = [(q.get("system"), q.get("code")) if q.get("code") is not None else q.get("unit") for q in (low, high)]
    if unit[0] != unit[1]:
        return []
    return [least <= most]


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


#: Constraints evaluated by a JSON walk that gives the expression's result (see each function).
NATIVE: dict[str, Evaluator] = {
    "dom-3": lambda value, _type, _site: [not any(unreferenced_contained(value))],
    "rng-2": _range_ordered,
}


#: Expressions restated for fhirpathpy, with the reason (same meaning under FHIRPath's rules).
RESTATED: dict[str, tuple[str, str]] = {
    "que-7": (
        "operator = 'exists' implies (answer is boolean)",
        "'answer is Boolean' names the System type, which a FHIR boolean is; fhirpathpy compares "
        "type names and answers false for answerBoolean",
    ),
}


def _evaluator(constraint: Constraint, type_name: str) -> Evaluator:
    """Compiled closures when the subset covers the expression, the engine otherwise."""
    if constraint.key in NATIVE:
        return NATIVE[constraint.key]
    text = RESTATED.get(constraint.key, (constraint.expression,))[0]
    engine = _engine_evaluator(text)
    context = type_name if "." in type_name or type_name[:1].isupper() else None
    try:
        compiled = ExpressionCompiler(type_name.split(".")[0]).compile(text, context)
    except Unsupported:
        return engine

    def run(value: Any, type_name: str, site: Site) -> list:
        try:
            return compiled([value], site.resource)
        except Undecided:
            return engine(value, type_name, site)

    return run


@dataclass(slots=True)
class _Check:
    constraint: Constraint
    run: Evaluator
    reads: frozenset[str] | None
    when_absent: bool | None  # the outcome on an element without any of ``reads``


@cache
def _check(constraint: Constraint, type_name: str) -> _Check:
    run = _evaluator(constraint, type_name)
    text = RESTATED.get(constraint.key, (constraint.expression,))[0]
    reads = None if constraint.key in NATIVE else _reads(parse(text)).names
    check = _Check(constraint, run, reads, None)
    if reads is not None:
        empty: dict[str, Any] = {}
        check.when_absent = _passes(run(empty, type_name, Site((), empty, type_name, "", empty, empty)))
    return check


def _passes(result: list) -> bool:
    """A constraint fails only on a single ``false``; empty or non-boolean results are not failures
    (the element it needs is absent, as the definitions intend)."""
    return not (len(result) == 1 and result[0] is False)


def _projection(value: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """The children of ``value`` that an expression reading ``names`` can see (choice members
    ``valueQuantity`` for ``value``, primitive extensions ``_start`` for ``start``)."""
    out = {}
    for key, child in value.items():
        base = key[1:] if key.startswith("_") else key
        if base in names or any(base.startswith(n) and base[len(n):len(n) + 1].isupper() for n in names):
            out[key] = child
    return out


_outcomes: dict[tuple[int, str, bytes], bool] = {}


def _outcome(check: _Check, site: Site) -> bool:
    """Whether the constraint holds on the site; raises FhirPathEvaluationError."""
    value, reads = site.value, check.reads
    if reads is None or not isinstance(value, dict):
        return _passes(check.run(value, site.type, site))
    seen = _projection(value, reads)
    if not seen:
        assert check.when_absent is not None
        return check.when_absent
    try:
        key = orjson.dumps(seen)
    except TypeError:
        key = b""
    if not key or len(key) > _KEY_MAX:
        return _passes(check.run(value, site.type, site))
    memo = (id(check), site.type, key)
    known = _outcomes.get(memo)
    if known is None:
        known = _passes(check.run(seen, site.type, site))
        if len(_outcomes) >= _KEPT:
            _outcomes.clear()
        _outcomes[memo] = known
    return known


def _failures(resource: Mapping[str, Any]) -> Iterator[tuple[Constraint, str, str | None]]:
    """(constraint, element expression, evaluation error or None) of every constraint not met."""
    for expression in empty_elements(resource):
        yield ELE_1, expression, None
    for site in sites(resource):
        for constraint in site.constraints:
            check = _check(constraint, site.type)
            try:
                if not _outcome(check, site):
                    yield constraint, site.expression, None
            except (FhirPathEvaluationError, RecursionError) as exc:
                yield constraint, site.expression, str(exc)


def invariant_issues(resource: Mapping[str, Any]) -> list[Issue]:
    """Every invariant ``resource`` breaks, as issues: errors for the constraints that refuse a
    write, warnings for best practice and warning-level ones (and for expressions that could not
    be evaluated on this data, which never refuse a write)."""
    if not isinstance(resource, dict):
        return []  # not a resource: structure validation says so
    reset_clock()
    issues = []
    for constraint, expression, error in _failures(resource):
        if error is not None:
            issues.append(Issue(
                f"Constraint {constraint.key} could not be evaluated ({constraint.expression}): {error}",
                "informational", "warning", (expression,),
            ))
            continue
        issues.append(Issue(
            f"Constraint failed: {constraint.key}: {constraint.human} ({constraint.expression})",
            "invariant", "error" if constraint.rejects else "warning", (expression,),
        ))
    return issues


def invariant_errors(resource: Mapping[str, Any]) -> list[Issue]:
    """The issues of ``invariant_issues`` that refuse a write."""
    return [issue for issue in invariant_issues(resource) if issue.severity == "error"]
