"""The R4 core invariants evaluated on a resource: each constraint compiled once, run on every
element instance it sits on (``fhirfus.fhir.invariants``).

Why this shape: a write meets dozens of constraint instances, and fhirpathpy builds a context and
walks an AST for each. So an expression is compiled to closures when the views' compiler
(``fhirpath.compiler``) covers it, and goes to the engine otherwise (or when the compiled form
cannot decide on this data); a few are written out natively (``NATIVE``). Most constraints read
only a few named children of their element, so the children present decide much: a constraint
holds when a child that makes one of its disjuncts true is absent, one reading none of the
children present has its outcome on an empty element, one testing presence only is evaluated
once per set of children (``_plan``). Otherwise the outcome of the same children seen before is
reused, and so are the failures of a whole child of the resource seen before, when they depend
on nothing outside it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson
from fhirpathpy.engine.nodes import ResourceNode

from fhirfus.errors import Issue
from fhirfus.fhir.bindings import RESOURCE_TABLE, element_tables
from fhirfus.fhir.invariants import (
    Constraint,
    Site,
    columns,
    element_constraint,
    primitive_extras,
    resource_constraints,
    unreferenced_contained,
)
from fhirfus.fhirpath.compiler import ExpressionCompiler, Undecided, Unsupported
from fhirfus.fhirpath.engine import (
    STANDARD_VARIABLES,
    Expression,
    FhirPathEvaluationError,
    compare_datetimes,
    compile_expression,
    parse,
    reset_clock,
    to_python,
)

#: Variables that read beyond the element itself.
_WIDE_VARIABLES = frozenset({"resource", "rootResource", "context"})
#: Outcomes remembered per (constraint, children read); cleared when full.
_KEPT = 20_000  # with keys of at most _KEY_MAX bytes: bounded memory per worker
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
    return _engine_evaluator_of(compile_expression(text))


def _engine_evaluator_of(expression: Expression) -> Evaluator:
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


def _local_reference_resolves(value: Any, _type: str, site: Site) -> list:
    """ref-1 (``reference.startsWith('#').not() or (reference.substring(1) in
    %rootResource.contained.id)``) on a Reference's JSON, with the R4 technical correction that a
    contained resource may refer to its container as ``#``. It sits on every Reference, and the
    engine form builds a context for what is nearly always a string test."""
    reference = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(reference, str) or not reference.startswith("#"):
        return [True]
    if reference == "#" and site.root is not site.resource:
        return [True]
    contained = site.root.get("contained")
    ids = {c.get("id") for c in contained if isinstance(c, dict)} if isinstance(contained, list) else set()
    return [reference[1:] in ids]


def _period_ordered(value: Any, _type: str, _site: Site) -> list:
    """per-1 (``start.hasValue().not() or end.hasValue().not() or (start <= end)``) with the
    engine's dateTime ordering, without building an evaluation context: it sits on every Period,
    and its memo never hits (every period has its own dates)."""
    start, end = (value.get(end) if isinstance(value, dict) else None for end in ("start", "end"))
    if not isinstance(start, str) or not isinstance(end, str):
        return [True]
    order = compare_datetimes(start, end)
    return [] if order is None else [order <= 0]


#: obs-7 as the definitions state it: ``_component_code_repeated`` gives its result.
OBS_7 = "value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()"
#: The Coding elements ``_component_code_repeated`` compares itself: plain values, no extensions.
_PLAIN_CODING = frozenset({"system", "version", "code", "display", "userSelected"})


def _codings(concept: Any) -> list[dict] | None:
    """The Codings of a CodeableConcept's JSON, None unless each is plain (``_PLAIN_CODING``)."""
    if concept is None:
        return []
    codings = concept.get("coding", []) if isinstance(concept, dict) else None
    if not isinstance(codings, list) or not all(isinstance(c, dict) and c.keys() <= _PLAIN_CODING for c in codings):
        return None
    return codings


def _component_code_repeated(value: Any, type_name: str, site: Site) -> list:
    """obs-7 (``OBS_7``): no value[x] beside a component whose code shares a Coding with the
    Observation's code. It sits on every Observation with components and a value, where the engine
    form walks a where() and an intersect() through FHIRPath nodes; for plain Codings, FHIRPath
    equality is the JSON's equality. Anything else (extensions, odd shapes) goes to the engine."""
    if not isinstance(value, dict) or any(k.startswith("_value") for k in value):
        return _obs_7_engine()(value, type_name, site)
    if not any(k.startswith("value") and k[5:6].isupper() for k in value):
        return [True]
    components = value.get("component", [])
    ours = _codings(site.resource.get("code"))
    if not isinstance(components, list) or ours is None:
        return _obs_7_engine()(value, type_name, site)
    for component in components:
        theirs = _codings(component.get("code")) if isinstance(component, dict) else None
        if theirs is None:
            return _obs_7_engine()(value, type_name, site)
        if any(coding in ours for coding in theirs):
            return [False]
    return [True]


_obs_7: list[Evaluator] = []


def _obs_7_engine() -> Evaluator:
    if not _obs_7:
        _obs_7.append(_engine_evaluator(OBS_7))
    return _obs_7[0]


#: Constraints evaluated by a JSON walk that gives the expression's result (see each function).
NATIVE: dict[str, Evaluator] = {
    "ele-1": lambda value, _type, _site: [not (type(value) is dict and (not value or (len(value) == 1 and "id" in value)))],
    "dom-3": lambda value, _type, _site: [not any(unreferenced_contained(value))],
    "rng-2": _range_ordered,
    "ref-1": _local_reference_resolves,
    "per-1": _period_ordered,
    "obs-7": _component_code_repeated,
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
    enough_absent: tuple[str, ...]  # the constraint holds when any of these children is absent
    presence_only: bool  # the outcome depends on which children are present, not on their values


_checks: dict[tuple[int, str], _Check] = {}


def _check(constraint: Constraint, type_name: str) -> _Check:
    """The compiled check of a constraint on values of a type (kept for the process: constraints
    live as long, so their id is a stable key)."""
    found = _checks.get((id(constraint), type_name))
    if found is None:
        found = _checks[(id(constraint), type_name)] = _new_check(constraint, type_name)
    return found


def _new_check(constraint: Constraint, type_name: str) -> _Check:
    run = _evaluator(constraint, type_name)
    if constraint.key in NATIVE:
        return _Check(constraint, run, None, None, (), False)
    ast = parse(RESTATED.get(constraint.key, (constraint.expression,))[0])
    reads = _reads(ast).names
    check = _Check(constraint, run, reads, None, _enough_absent(ast["children"][0], type_name),
                   reads is not None and _presence_only(ast))
    if reads is not None:
        empty: dict[str, Any] = {}
        check.when_absent = _passes(run(empty, type_name, Site((), empty, type_name, "", empty, empty)))
    return check


#: Functions whose result on an empty input does not depend on their arguments (or the focus).
_EMPTY_DECIDED = frozenset({
    "where", "select", "all", "exists", "empty", "not", "count", "first", "last", "tail", "single",
    "hasValue", "ofType", "as", "is", "distinct", "isDistinct", "startsWith", "endsWith", "matches",
    "contains", "length", "substring", "upper", "lower", "toInteger", "toString", "trace",
    "children", "descendants", "allTrue", "anyTrue", "allFalse", "anyFalse",
})


def _enough_absent(node: Mapping[str, Any], type_name: str) -> tuple[str, ...]:
    """Children whose absence alone makes the expression true: the heads of the disjuncts of a
    top-level ``or`` that are plain chains (``component.code.where(...).empty()``) and are true
    on an element without that child. A chain from an absent child is empty from its start, so
    what follows cannot depend on the data."""
    heads = []
    for disjunct in _disjuncts(node):
        head = _chain_head(disjunct)
        if head is None:
            continue
        empty: dict[str, Any] = {}
        try:
            result = _engine_evaluator_of(compile_disjunct(disjunct))(empty, type_name, Site((), empty, type_name, "", empty, empty))
        except FhirPathEvaluationError:
            continue
        if result == [True]:
            heads.append(head)
    return tuple(heads)


def _presence_only(ast: Mapping[str, Any]) -> bool:
    """Whether every child the expression names is only tested for presence (``answer.exists()``,
    ``item.empty()``), as in qrs-1. Called on an expression whose reads are known (no ``$this``,
    no wide variable, no function of the focus itself)."""
    tested: set[int] = set()
    members: list[int] = []
    stack = [ast]
    while stack:
        node = stack.pop()
        kind = node.get("type")
        if kind == "MemberInvocation":
            members.append(id(node))
        if kind == "InvocationExpression":
            left, right = node["children"]
            if left.get("type") == "TermExpression" and right.get("type") == "FunctionInvocation":
                term = left["children"][0]
                functn = right["children"][0]
                if term.get("type") == "InvocationTerm" and term["children"][0].get("type") == "MemberInvocation" \
                        and functn["children"][0].get("text") in ("exists", "empty") and len(functn["children"]) == 1:
                    tested.add(id(term["children"][0]))
        stack.extend(node.get("children", ()))
    return all(member in tested for member in members)


def _disjuncts(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    kind = node.get("type")
    if kind == "OrExpression" and node.get("terminalNodeText") == ["or"]:
        return _disjuncts(node["children"][0]) + _disjuncts(node["children"][1])
    if kind == "TermExpression" and node["children"][0].get("type") == "ParenthesizedTerm":
        return _disjuncts(node["children"][0]["children"][0])
    return [node]


def _chain_head(node: Mapping[str, Any]) -> str | None:
    """``x`` of ``x.a.where(...).empty()`` (members and ``_EMPTY_DECIDED`` functions only)."""
    kind = node.get("type")
    if kind == "InvocationExpression":
        left, right = node["children"]
        if right.get("type") == "FunctionInvocation":
            name = right["children"][0]["children"][0].get("text")
            if name not in _EMPTY_DECIDED:
                return None
        elif right.get("type") != "MemberInvocation":
            return None
        return _chain_head(left)
    if kind == "TermExpression":
        term = node["children"][0]
        if term.get("type") == "InvocationTerm" and term["children"][0].get("type") == "MemberInvocation":
            text = str(term["children"][0]["children"][0].get("text", "")).strip("`")
            return text if text[:1].islower() else None
    return None


def compile_disjunct(node: Mapping[str, Any]) -> Expression:
    return Expression.of_node(dict(node), "(part of an invariant)")


def _passes(result: list) -> bool:
    """A constraint fails only on a single ``false``; empty or non-boolean results are not failures
    (the element it needs is absent, as the definitions intend)."""
    return not (len(result) == 1 and result[0] is False)


_stems: dict[str, tuple[str, str, str]] = {}


def _names(value: Mapping[str, Any]) -> frozenset[str]:
    """The element names ``value`` has children for: ``valueQuantity`` counts as ``value`` and
    ``valueQuantity``, ``_start`` as ``start`` and ``_start`` (an extension makes an element
    present, and an element with only extensions is told apart). ``null``, ``[]`` and ``[null]``
are absent."""
    present: set[str] = set()
    for key, child in value.items():
        if child is None or (type(child) is list and all(item is None for item in child)):
            continue
        stems = _stems.get(key)
        if stems is None:
            base = key[1:] if key.startswith("_") else key
            cut = next((i for i, c in enumerate(base) if c.isupper()), len(base))
            stems = _stems[key] = (base, base[:cut], key)
        present.update(stems)
    return frozenset(present)


def _projection(value: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """The children of ``value`` that an expression reading ``names`` can see."""
    return {key: child for key, child in value.items() if key in _stems and not names.isdisjoint(_stems[key])}


_outcomes: dict[tuple[int, str, bytes], bool] = {}
#: What evaluating an expression on unusual data may raise: reported as a warning on that element,
#: never a failed request (the structure was validated before).
_DATA_ERRORS = (FhirPathEvaluationError, RecursionError, TypeError, ValueError, KeyError, AttributeError, IndexError)


def _outcome(check: _Check, site: Site, present: frozenset[str] | None) -> bool:
    """Whether the constraint holds on the site (its children's values looked at); raises
    FhirPathEvaluationError. ``present``: the names of the site's children, None when its value
    is not an object."""
    value, reads = site.value, check.reads
    if reads is None or present is None:
        return _passes(check.run(value, site.type, site))
    seen = _projection(value, reads)
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


@dataclass(frozen=True, slots=True)
class _Plan:
    """For the constraints of one kind of site with one set of children present: what to
    evaluate on each value, and what fails whatever the values."""

    run: tuple[_Check, ...]
    failing: tuple[Constraint, ...]


_plans: dict[tuple[int, str, frozenset[str]], _Plan] = {}


def _plan(site: Site, present: frozenset[str]) -> _Plan:
    """Decided by the children present: a check whose enough-absent child is missing holds, one
    reading none of the children present has its outcome on an empty element, and one testing
    presence only is evaluated once, on this site, for all sites with the same children."""
    key = (id(site.constraints), site.type, present)
    found = _plans.get(key)
    if found is not None:
        return found
    run: list[_Check] = []
    failing: list[Constraint] = []
    for constraint in site.constraints:
        check = _check(constraint, site.type)
        if check.enough_absent and not present.issuperset(check.enough_absent):
            continue
        if check.reads is not None and check.reads.isdisjoint(present):
            if not check.when_absent:
                failing.append(constraint)
            continue
        if check.presence_only:
            try:
                if not _passes(check.run(site.value, site.type, site)):
                    failing.append(constraint)
                continue
            except _DATA_ERRORS:
                pass  # evaluated (and reported) per site
        run.append(check)
    if len(_plans) >= _KEPT:
        _plans.clear()
    found = _plans[key] = _Plan(tuple(run), tuple(failing))
    return found


Failure = tuple[Constraint, str, str | None]
#: Natives whose outcome depends on the element alone (ref-1 too when no reference is local).
_CONTEXT_FREE = frozenset({"ele-1", "rng-2", "per-1", "ref-1"})
#: (element, its JSON) → failures within it, expressions relative to it, for elements seen before.
_subtrees: dict[tuple[int, bytes], list[Failure]] = {}


def _failures(resource: Mapping[str, Any]) -> list[Failure]:
    """(constraint, element expression, evaluation error or None) of every constraint not met,
    walking the resource as ``fhir.invariants.sites`` does. An element whose failures depend on
    nothing outside it is remembered by its JSON (the same coding, the same questionnaire item
    recur across resources) when its JSON is small."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in element_tables():
        return []
    return _resource_failures(resource, resource_type, resource_type, resource, [])


def _resource_failures(
    resource: Mapping[str, Any], resource_type: str, expr: str, root: Mapping[str, Any], wide: list[bool]
) -> list[Failure]:
    out: list[Failure] = []
    found = resource_constraints(resource_type)
    if found:
        out.extend(_site_failures(Site(found, resource, resource_type, expr, resource, root), wide))
    out.extend(_object_failures(resource, resource_type, expr, resource, root, wide))
    return out


def _object_failures(
    obj: Mapping[str, Any], table: str, expr: str, resource: Mapping[str, Any], root: Mapping[str, Any],
    wide: list[bool],
) -> list[Failure]:
    out: list[Failure] = []
    known = columns(table)
    for key, value in obj.items():
        planned = known.get(key, _UNKNOWN)
        if planned is _UNKNOWN:
            if key[:1] == "_":  # a primitive's id and extensions: ele-1 only
                for site in primitive_extras(value, f"{expr}.{key}", resource, root):
                    out.extend(_site_failures(site, wide))
            continue
        if planned is None:
            continue
        element, found = planned
        if type(value) is list:
            for index, item in enumerate(value):
                out.extend(_element_failures(item, element, found, f"{expr}.{key}[{index}]", resource, root, wide))
        else:
            out.extend(_element_failures(value, element, found, f"{expr}.{key}", resource, root, wide))
    return out


_UNKNOWN: Any = object()


def _element_failures(
    value: Any, element: Any, found: tuple[Constraint, ...], expr: str, resource: Mapping[str, Any],
    root: Mapping[str, Any], wide: list[bool],
) -> list[Failure]:
    table = element.table
    if table == RESOURCE_TABLE:
        nested_type = value.get("resourceType") if isinstance(value, Mapping) else None
        if not isinstance(nested_type, str) or nested_type not in element_tables():
            return []
        # %rootResource is the container of a contained resource; a Bundle's or Parameters'
        # resources are roots of their own
        nested_root = root if element.path.endswith(".contained") else value
        return _resource_failures(value, nested_type, expr, nested_root, wide)
    if table is not None and type(value) is dict:
        key = _subtree_key(element, value)
        if key is not None:
            known = _subtrees.get(key)
            if known is not None:
                return [(constraint, expr + suffix, error) for constraint, suffix, error in known]
            inner: list[bool] = []  # its parts are tried too: a new group of known answers
            out = _element_here(value, element, found, expr, resource, root, inner)
            if inner:
                wide.append(True)
            else:
                if len(_subtrees) >= _KEPT:
                    _subtrees.clear()
                _subtrees[key] = [(constraint, where[len(expr):], error) for constraint, where, error in out]
            return out
    return _element_here(value, element, found, expr, resource, root, wide)


def _element_here(
    value: Any, element: Any, found: tuple[Constraint, ...], expr: str, resource: Mapping[str, Any],
    root: Mapping[str, Any], wide: list[bool],
) -> list[Failure]:
    table = element.table
    out: list[Failure] = []
    if found:
        out.extend(_site_failures(Site(found, value, table or element.path, expr, resource, root), wide))
    if table is not None and type(value) is dict:
        if not value or (len(value) == 1 and "id" in value):
            out.extend(_site_failures(Site((element_constraint(),), value, "Element", expr, resource, root), wide))
        else:
            out.extend(_object_failures(value, table, expr, resource, root, wide))
    return out


def _subtree_key(element: Any, value: dict) -> tuple[int, bytes] | None:
    try:
        blob = orjson.dumps(value)
    except TypeError:
        return None
    if len(blob) > _KEY_MAX or b'"#' in blob:  # a local reference depends on the container (ref-1)
        return None
    return id(element), blob


def _site_failures(site: Site, wide: list[bool]) -> Iterator[Failure]:
    """The failures at one site; appends to ``wide`` when an outcome depended on more than the
    site's own element (or could not be evaluated)."""
    if type(site.value) is not dict:
        checks: tuple[_Check, ...] = tuple(_check(c, site.type) for c in site.constraints)
        present = None
    else:
        present = _names(site.value)
        plan = _plan(site, present)
        for constraint in plan.failing:
            yield constraint, site.expression, None
        checks = plan.run
    for check in checks:
        if check.reads is None and check.constraint.key not in _CONTEXT_FREE:
            wide.append(True)
        try:
            if not _outcome(check, site, present):
                yield check.constraint, site.expression, None
        except _DATA_ERRORS as exc:
            wide.append(True)
            yield check.constraint, site.expression, f"{type(exc).__name__}: {exc}"


def invariant_issues(resource: Mapping[str, Any]) -> list[Issue]:
    """Every invariant ``resource`` breaks, as issues: errors for the constraints that refuse a
    write, warnings for best practice and warning-level ones (and for expressions that could not
    be evaluated on this data, which never refuse a write)."""
    if not isinstance(resource, dict):
        return []  # not a resource: structure validation says so
    reset_clock()
    try:
        failures = _failures(resource)
    except RecursionError:
        return [Issue("The resource is nested too deeply to check its invariants", "too-costly", "error",
                      (str(resource.get("resourceType")),))]
    issues = []
    for constraint, expression, error in failures:
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
