"""Search-parameter paths, compiled once: plain FHIRPath paths to direct lookups, the rest to fhirpathpy.

Almost every R4 search expression is a plain path (``Observation.subject``,
``(Observation.effective as dateTime)``, ``X.a | X.b``) or a path with a cheap filter
(``.where(resolve() is Patient)``, ``.where(system='email')``). ``compile_path`` turns those into
dictionary lookups (choice types resolved with the R4 model that ships with fhirpathpy); anything
else is evaluated by fhirpathpy (``fhirpath_evaluator``). ``resolve() is T`` never loads the
target: the reference's own type prefix is the answer, so ``urn:uuid:`` references must be
rewritten to ``Type/id`` first.

``x as T`` on several items filters them by type (as fhirpath.js and the other servers do; R4
expressions such as ``Observation.component.value as Quantity`` rely on it), where fhirpathpy
raises.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models as _fhirpath_models
from fhirpathpy.parser import parse as _fhirpath_parse

from fhirfus.fhir.references import reference_target

log = logging.getLogger(__name__)

_MODEL: dict[str, Any] = _fhirpath_models["r4"]
_CHOICES: Mapping[str, list[str]] = _MODEL["choiceTypePaths"]
_PATH_TYPES: Mapping[str, str] = _MODEL["path2Type"]
_PARENTS: Mapping[str, str] = _MODEL["type2Parent"]
_ELSEWHERE: Mapping[str, str] = _MODEL["pathsDefinedElsewhere"]


def split_union(expression: str) -> list[str]:
    """Split FHIRPath on top-level ``|`` (bars inside parentheses or quotes are kept)."""
    return [b.strip() for b in split_top_level(expression, "|") if b.strip()]


def split_top_level(text: str, separator: str) -> list[str]:
    """Split on a one-character separator outside parentheses, brackets and quotes."""
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for index, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


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
def compile_path(expression: str, resource_type: str, base: str) -> tuple[Evaluator, tuple[str | None, ...]] | None:
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
    inner = compile_path(path, resource_type, base)
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
    compiled = compile_path(expression, resource_type, resource_type)
    return compiled is not None and "Identifier" in compiled[1]


def uses_fast_path(resource_type: str, expression: str) -> bool:
    """Whether ``expression`` is evaluated by direct lookups rather than fhirpathpy."""
    return compile_path(expression, resource_type, resource_type) is not None


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
def compile_fhirpath(expression: str, raw: bool = False) -> Callable[..., list[Any]]:
    """fhirpathpy's compiled form of an expression (parsed once per process)."""
    return fhirpathpy.compile(expression, _MODEL, _RAW_OPTIONS if raw else _OPTIONS)


@cache
def _parse_fhirpath(expression: str) -> dict[str, Any]:
    """fhirpathpy's parse tree, for evaluating components on nodes of a composite."""
    parsed: dict[str, Any] = _fhirpath_parse(expression)
    return parsed


def fhirpath_evaluator(expression: str) -> Evaluator:
    """Evaluate with fhirpathpy; an expression it cannot parse or evaluate yields nothing."""
    try:
        compiled = compile_fhirpath(expression)
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


def fhirpath_on_node(expression: str, node: ResourceNode, root: dict[str, Any]) -> list[Any]:
    """Evaluate a component expression with fhirpathpy on a node that knows its model path."""
    try:
        return list(fhirpathpy.apply_parsed_path(node, _parse_fhirpath(expression), {"resource": root}, _MODEL, _OPTIONS))
    except Exception as exc:
        log.debug("fhirpathpy could not evaluate component %r: %s", expression, exc)
        return []
