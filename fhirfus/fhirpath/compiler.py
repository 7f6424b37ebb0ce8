"""FHIRPath compiled to plain Python closures over JSON: the subset views use, checked against the engine.

fhirpathpy interprets its AST node by node; a view runner evaluates the same few expressions on
hundreds of thousands of resources. ``ExpressionCompiler`` compiles the common subset (member
paths, ``where``, ``exists``, ``empty``, ``not``, ``first``, ``startsWith`` of a literal, ``ofType`` on choice elements,
``getResourceKey``, ``getReferenceKey``, ``=``/``!=`` against literals, ``and``/``or``, ``|``)
from the strict parse tree of ``fhirfus.fhirpath.engine``. An expression outside the subset is
``Unsupported`` (the caller evaluates it with the engine); data the subset does not decide
exactly (equality on several items, a date compared with a string, ...) raises ``Undecided`` at
run time, and the caller evaluates that one resource with the engine.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fhirfus.fhirpath.engine import R4_MODEL, FhirPathSyntaxError, parse, reference_key

#: Compiled expression: (focus items, the resource) -> result items (plain JSON values).
Fn = Callable[[list, Mapping[str, Any]], list]

_DATE_LIKE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?(T.*)?$|^T?\d{2}:\d{2}")
_CHOICES: dict[str, list[str]] = R4_MODEL["choiceTypePaths"]
_PATH_TYPES: dict[str, str] = R4_MODEL["path2Type"]
_ELSEWHERE: dict[str, str] = R4_MODEL["pathsDefinedElsewhere"]


_COMPLEX = frozenset(R4_MODEL["type2Parent"])
_STRINGY = frozenset({"code", "string", "id", "uri", "url", "canonical", "oid", "uuid", "markdown", "System.String"})
_TEMPORAL = frozenset({"date", "dateTime", "instant", "time"})


def _function_name(node: Mapping[str, Any]) -> str | None:
    if node.get("type") != "FunctionInvocation":
        return None
    return str(node["children"][0]["children"][0].get("text", ""))


class Unsupported(Exception):
    """The expression or view is outside the compiled subset (the reference runner handles it)."""


class Undecided(Exception):
    """This resource's data needs the reference runner's full semantics."""


# --- expressions -----------------------------------------------------------------------------


def _is_value(value: Any) -> bool:
    """Mirror of ``fhirpath.is_value``: skip nulls and extension-only primitive shadows."""
    return value is not None and not (isinstance(value, dict) and len(value) == 1 and "extension" in value)


def _member(name: str) -> Fn:
    """Child elements called ``name`` (lists flattened). JSON objects are plain dicts here, and the
    exact ``isinstance(…, dict)`` test is several times cheaper than an ABC ``Mapping`` check."""
    def member(focus: list, _root: Mapping[str, Any]) -> list:
        out: list = []
        for item in focus:
            if not isinstance(item, dict):
                continue
            value = item.get(name)
            if value is None:
                continue
            if isinstance(value, list):
                out.extend(v for v in value if _is_value(v))
            elif not (isinstance(value, dict) and len(value) == 1 and "extension" in value):
                out.append(value)
        return out

    return member


def _singleton_bool(items: list) -> bool | None:
    if not items:
        return None
    if len(items) == 1 and isinstance(items[0], bool):
        return items[0]
    raise Undecided


def _literal_equal(value: Any, literal: Any, stringy: bool) -> bool:
    """Equality where the fast path is certain; anything typed (dates, quantities…) falls back.

    ``stringy``: the element is statically a string-like primitive, so a date-looking code such
    as CPT ``0398T`` is still compared as text."""
    if isinstance(literal, bool) or isinstance(value, bool):
        if isinstance(literal, bool) and isinstance(value, bool):
            return value == literal
        raise Undecided
    if isinstance(literal, str) and isinstance(value, str):
        if not stringy and (_DATE_LIKE.match(value) or _DATE_LIKE.match(literal)):
            raise Undecided
        return value == literal
    raise Undecided


def _dedupe(items: list) -> list:
    out: list = []
    for item in items:
        if not any(type(item) is type(seen) and item == seen for seen in out):
            out.append(item)
    return out


@dataclass
class _Compiled:
    fn: Fn
    path: str | None  # static FHIR path/type of the result, when known (needed by ofType)


class ExpressionCompiler:
    """AST (fhirpathpy's parse tree) → closure, for the subset only; raises Unsupported."""

    def __init__(self, resource_type: str) -> None:
        self.resource_type = resource_type

    def compile(self, text: str, context: str | None) -> Fn:
        try:
            ast = parse(text)
        except FhirPathSyntaxError as exc:
            raise Unsupported(str(exc)) from exc
        return self.node(ast["children"][0], context).fn

    def node(self, node: Mapping[str, Any], context: str | None) -> _Compiled:
        kind = node.get("type")
        children = node.get("children", [])
        if kind == "TermExpression":
            return self.term(children[0], context)
        if kind == "InvocationExpression":
            if _function_name(children[1]) == "ofType":
                return self.of_type(node, context)
            left = self.node(children[0], context)
            return self.invocation(children[1], left)
        if kind == "EqualityExpression":
            return self.equality(node, context)
        if kind in ("AndExpression", "OrExpression"):
            return self.logic(node, context)
        if kind == "UnionExpression":
            first, second = (self.node(c, context).fn for c in children)
            return _Compiled(lambda focus, root: _dedupe(first(focus, root) + second(focus, root)), None)
        raise Unsupported(f"{kind} is not compiled")

    def term(self, node: Mapping[str, Any], context: str | None) -> _Compiled:
        kind = node.get("type")
        children = node.get("children", [])
        if kind == "ParenthesizedTerm":
            return self.node(children[0], context)
        if kind == "InvocationTerm":
            inner = children[0]
            if inner.get("type") == "ThisInvocation":
                return _Compiled(lambda focus, _root: list(focus), context)
            start = _Compiled(lambda focus, _root: focus, context)
            if inner.get("type") == "MemberInvocation" and context == self.resource_type:
                name = self.identifier(inner)
                if name[:1].isupper():
                    raise Unsupported("type-name prefixes are not compiled")
            return self.invocation(inner, start)
        raise Unsupported(f"{kind} is not compiled")

    def literal(self, node: Mapping[str, Any]) -> Any:
        """A string or boolean literal term, else Unsupported."""
        if node.get("type") != "TermExpression":
            raise Unsupported("not a literal")
        term = node["children"][0]
        if term.get("type") != "LiteralTerm":
            raise Unsupported("not a literal")
        literal = term["children"][0]
        text = literal.get("text", "")
        if literal.get("type") == "StringLiteral" and "\\" not in text:
            return text[1:-1]
        if literal.get("type") == "BooleanLiteral":
            return text == "true"
        raise Unsupported(f"{literal.get('type')} literals are not compiled")

    @staticmethod
    def identifier(node: Mapping[str, Any]) -> str:
        ident = node["children"][0]
        if ident.get("type") != "Identifier":
            raise Unsupported("unexpected member")
        return str(ident.get("text", "")).strip("`")

    def member_path(self, parent: str | None, name: str) -> str | None:
        """Static path of a member: a complex type's name, else the element path (None: unknown)."""
        if parent is None:
            return None
        path = f"{parent}.{name}"
        path = _ELSEWHERE.get(path, path)
        if path in _CHOICES:
            return path
        return _PATH_TYPES.get(path, path)

    def invocation(self, node: Mapping[str, Any], left: _Compiled) -> _Compiled:
        kind = node.get("type")
        if kind == "MemberInvocation":
            name = self.identifier(node)
            path = self.member_path(left.path, name)
            if path is None or path in _CHOICES:
                raise Unsupported(f"member {name!r} of an unknown or choice type")
            member = _member(name)
            inner = left.fn
            return _Compiled(lambda focus, root: member(inner(focus, root), root), path)
        if kind == "FunctionInvocation":
            functn = node["children"][0]
            name = str(functn["children"][0].get("text", ""))
            params = functn["children"][1]["children"] if len(functn["children"]) > 1 else []
            return self.function(name, params, left)
        raise Unsupported(f"{kind} is not compiled")

    def function(self, name: str, params: list, left: _Compiled) -> _Compiled:
        inner = left.fn
        if name == "where" and len(params) == 1:
            criteria = self.node(params[0], left.path).fn
            def where(focus: list, root: Mapping[str, Any]) -> list:
                return [item for item in inner(focus, root) if _singleton_bool(criteria([item], root)) is True]
            return _Compiled(where, left.path)
        if name == "exists" and len(params) <= 1:
            if params:
                return self.function("exists", [], self.function("where", params, left))
            return _Compiled(lambda focus, root: [bool(inner(focus, root))], None)
        if name == "empty" and not params:
            return _Compiled(lambda focus, root: [not inner(focus, root)], None)
        if name == "not" and not params:
            def negate(focus: list, root: Mapping[str, Any]) -> list:
                value = _singleton_bool(inner(focus, root))
                return [] if value is None else [not value]
            return _Compiled(negate, None)
        if name == "first" and not params:
            return _Compiled(lambda focus, root: inner(focus, root)[:1], left.path)
        if name == "startsWith" and len(params) == 1:
            prefix = self.literal(params[0])
            if not isinstance(prefix, str):
                raise Unsupported("startsWith() of a non-string literal")
            def starts_with(focus: list, root: Mapping[str, Any]) -> list:
                items = inner(focus, root)
                if not items:
                    return []
                if len(items) > 1 or not isinstance(items[0], str):
                    raise Undecided  # the engine's error, or its conversion of a non-string
                return [items[0].startswith(prefix)]
            return _Compiled(starts_with, None)
        if name == "getResourceKey" and not params:
            def resource_key(focus: list, root: Mapping[str, Any]) -> list:
                return [i["id"] for i in inner(focus, root)
                        if isinstance(i, dict) and "resourceType" in i and i.get("id") is not None]
            return _Compiled(resource_key, None)
        if name == "getReferenceKey" and len(params) <= 1:
            wanted = self.type_name(params[0]) if params else None
            def reference_keys(focus: list, root: Mapping[str, Any]) -> list:
                keys = (reference_key(item, wanted) for item in inner(focus, root))
                return [key for key in keys if key is not None]
            return _Compiled(reference_keys, None)
        raise Unsupported(f"function {name}() is not compiled")

    def type_name(self, node: Mapping[str, Any]) -> str:
        try:
            member = node["children"][0]["children"][0]
        except (KeyError, IndexError) as exc:
            raise Unsupported("type specifier") from exc
        if node.get("type") != "TermExpression" or member.get("type") != "MemberInvocation":
            raise Unsupported("type specifier")
        return self.identifier(member).removeprefix("FHIR.")

    def of_type(self, node: Mapping[str, Any], context: str | None) -> _Compiled:
        """``x.ofType(T)`` on a choice element ``x`` is the JSON member ``xT`` (e.g. valueQuantity)."""
        target, function = node["children"]
        functn = function["children"][0]
        params = functn["children"][1]["children"] if len(functn["children"]) > 1 else []
        if len(params) != 1:
            raise Unsupported("ofType() needs one type")
        if target.get("type") == "InvocationExpression" and target["children"][1].get("type") == "MemberInvocation":
            parent = self.node(target["children"][0], context)
            element = self.identifier(target["children"][1])
        elif target.get("type") == "TermExpression" and target["children"][0].get("type") == "InvocationTerm" \
                and target["children"][0]["children"][0].get("type") == "MemberInvocation":
            parent = _Compiled(lambda focus, _root: focus, context)
            element = self.identifier(target["children"][0]["children"][0])
        else:
            raise Unsupported("ofType() outside a choice element")
        if parent.path is None:
            raise Unsupported("ofType() on an element of unknown type")
        choice = f"{parent.path}.{element}"
        choice = _ELSEWHERE.get(choice, choice)
        type_name = self.type_name(params[0])
        suffix = type_name[:1].upper() + type_name[1:]
        if suffix not in _CHOICES.get(choice, []):
            raise Unsupported(f"ofType({type_name}) on {choice}")
        member = _member(element + suffix)
        inner = parent.fn
        return _Compiled(lambda focus, root: member(inner(focus, root), root), suffix if suffix in _COMPLEX else None)

    def equality(self, node: Mapping[str, Any], context: str | None) -> _Compiled:
        operator = node["terminalNodeText"][0]
        if operator not in ("=", "!="):
            raise Unsupported(f"operator {operator}")
        left_node, right_node = node["children"]
        try:
            literal = self.literal(right_node)
            compiled = self.node(left_node, context)
        except Unsupported:
            literal = self.literal(left_node)
            compiled = self.node(right_node, context)
        if compiled.path in _TEMPORAL:
            raise Unsupported("comparison of a date/time element")
        side, stringy = compiled.fn, compiled.path in _STRINGY
        negate = operator == "!="
        def equal(focus: list, root: Mapping[str, Any]) -> list:
            items = side(focus, root)
            if not items:
                return []
            if len(items) > 1:
                raise Undecided
            result = _literal_equal(items[0], literal, stringy)
            return [result != negate]
        return _Compiled(equal, None)

    def logic(self, node: Mapping[str, Any], context: str | None) -> _Compiled:
        operator = node["terminalNodeText"][0]
        if operator not in ("and", "or"):
            raise Unsupported(f"operator {operator}")
        left, right = (self.node(c, context).fn for c in node["children"])
        if operator == "and":
            def both(focus: list, root: Mapping[str, Any]) -> list:
                a, b = _singleton_bool(left(focus, root)), _singleton_bool(right(focus, root))
                if a is False or b is False:
                    return [False]
                return [True] if a is True and b is True else []
            return _Compiled(both, None)
        def either(focus: list, root: Mapping[str, Any]) -> list:
            a, b = _singleton_bool(left(focus, root)), _singleton_bool(right(focus, root))
            if a is True or b is True:
                return [True]
            return [False] if a is False and b is False else []
        return _Compiled(either, None)
