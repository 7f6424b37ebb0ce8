"""FHIRPath for ViewDefinitions: strict parsing and fhirpathpy evaluation with SQL-on-FHIR functions.

fhirpathpy's public ``compile`` re-wraps the user function table, resets its clock and
deep-converts the result on every call, and its parser silently accepts trailing garbage
(``"a b"`` parses as ``a``).  A view runner evaluates the same few expressions millions of
times and must reject malformed views up front, so this module parses strictly once and
calls the engine directly, keeping typed ``ResourceNode`` results for nested contexts.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from antlr4 import CommonTokenStream, InputStream
from antlr4.error.ErrorListener import ErrorListener
from antlr4.tree.Tree import ParseTreeWalker
from fhirpathpy.engine import do_eval
from fhirpathpy.engine.invocations.constants import constants as _clock
from fhirpathpy.engine.nodes import (
    FP_DateTime,
    FP_Quantity,
    FP_Time,
    ResourceNode,
    TypeInfo,
)
from fhirpathpy.models import models
from fhirpathpy.parser.ASTPathListener import ASTPathListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

R4_MODEL: dict[str, Any] = models["r4"]

#: FHIRPath's fixed environment variables (code system URLs).
STANDARD_VARIABLES: dict[str, str] = {
    "ucum": "http://unitsofmeasure.org",
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
}
#: Every variable an expression may reference besides the view's constants; the runner sets
#: the others per resource (%resource, %rootResource, %context) and per row (%rowIndex).
BUILTIN_VARIABLES = frozenset({*STANDARD_VARIABLES, "resource", "rootResource", "context", "rowIndex"})


class FhirPathSyntaxError(ValueError):
    """Raised when an expression is not valid FHIRPath."""


class FhirPathEvaluationError(ValueError):
    """Raised when the engine fails on data (wrong operand types, non-singleton input...)."""


class _RaisingErrorListener(ErrorListener):
    """ANTLR reports syntax errors to listeners and then recovers; we want a hard failure."""

    def __init__(self, expression: str) -> None:
        self.expression = expression

    def syntaxError(self, recognizer, offendingSymbol, line, column, msg, e):  # ANTLR listener API name
        raise FhirPathSyntaxError(f"invalid FHIRPath {self.expression!r} at {column}: {msg}")


def parse(expression: str) -> dict[str, Any]:
    """Parse the whole of ``expression`` (up to EOF) into fhirpathpy's AST, or raise."""
    if not isinstance(expression, str) or not expression.strip():
        raise FhirPathSyntaxError(f"FHIRPath expression must be a non-empty string, got {expression!r}")
    listener = _RaisingErrorListener(expression)
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    try:
        tree = parser.entireExpression()
    except FhirPathSyntaxError:
        raise
    except Exception as exc:  # the lexer raises its own exception types on bad characters
        raise FhirPathSyntaxError(f"invalid FHIRPath {expression!r}: {exc!r}") from exc
    ast = ASTPathListener()
    ParseTreeWalker().walk(ast, tree.expression())
    return ast.parentStack[0]


def referenced_variables(ast: Mapping[str, Any]) -> set[str]:
    """Names of the ``%variables`` an AST reads, so undefined constants fail at validation."""
    names: set[str] = set()
    stack = [ast]
    while stack:
        node = stack.pop()
        if node.get("type") == "ExternalConstant":
            text = "".join(_texts(node))
            names.add(text.lstrip("%").strip("`'"))
            continue
        stack.extend(node.get("children", ()))
    return names


def _texts(node: Mapping[str, Any]) -> Iterator[str]:
    if "text" in node:
        yield node["text"]
        return
    for child in node.get("children", ()):
        yield from _texts(child)


# --- SQL-on-FHIR functions -------------------------------------------------------------


def _get_resource_key(ctx: dict, data: list) -> list:
    """The key of each input resource: its logical id (unique within a view's resource type)."""
    keys = []
    for item in data:
        value = _data(item)
        if isinstance(value, Mapping) and "resourceType" in value and value.get("id") is not None:
            keys.append(value["id"])
    return keys


def _get_reference_key(ctx: dict, data: list, type_info: TypeInfo | None = None) -> list:
    """The key a Reference points at, comparable with getResourceKey(); empty on a type mismatch."""
    wanted = type_info.name if type_info is not None else None
    keys = []
    for item in data:
        key = reference_key(_data(item), wanted)
        if key is not None:
            keys.append(key)
    return keys


def reference_key(value: Any, wanted: str | None = None) -> str | None:
    """The id a Reference points at (``Type/id``, absolute, versioned), if of type ``wanted``."""
    reference = value.get("reference") if isinstance(value, Mapping) else None
    if not isinstance(reference, str):
        return None
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) < 2 or not parts[-1] or (wanted is not None and parts[-2] != wanted):
        return None
    return parts[-1]


def _join(ctx: dict, data: list, separator: Any = "") -> str:
    """String join that returns '' for an empty input, as the SQL-on-FHIR suite expects."""
    sep = separator if isinstance(separator, str) else ""
    values = [_data(item) for item in data]
    if not all(isinstance(v, str) for v in values):
        raise TypeError("join() requires a collection of strings")
    return sep.join(values)


def _extension(ctx: dict, data: list, url: Any) -> list:
    """All extensions with ``url`` (fhirpathpy's builtin keeps only the first match)."""
    found: list[ResourceNode] = []
    for item in data:
        element = _data(item)
        if isinstance(element, Mapping):
            found.extend(
                ResourceNode.create_node(ext, "Extension")
                for ext in element.get("extension", ())
                if isinstance(ext, Mapping) and ext.get("url") == url
            )
    return found


def _low_boundary(ctx: dict, data: list) -> list:
    """Least value the (imprecise) input could stand for; fhirpathpy has no boundary functions."""
    return [b for item in data if (b := _boundary(item, low=True)) is not None]


def _high_boundary(ctx: dict, data: list) -> list:
    """Greatest value the input could stand for (e.g. 1970-06 -> 1970-06-30)."""
    return [b for item in data if (b := _boundary(item, low=False)) is not None]


def _boundary(item: Any, low: bool) -> Any:
    """Dispatch on the FHIR type: decimals widen by half a unit of the last digit, partial
    dates/times fill the missing parts, and a dateTime without offset takes the extreme one."""
    kind = _primitive_kind(item)
    value = _data(item)
    if isinstance(item, FP_DateTime | FP_Time):
        value = item.asStr
    if kind == "decimal" or (kind is None and isinstance(value, int | float | Decimal)):
        return _decimal_boundary(value, low)
    if not isinstance(value, str):
        return None
    if kind == "date":
        return _date_boundary(value, low)
    if kind == "time":
        return _time_boundary(value, low)
    if kind in ("dateTime", "instant"):
        return _datetime_boundary(value, low)
    return None


def _primitive_kind(item: Any) -> str | None:
    if isinstance(item, FP_Time):
        return "time"
    if isinstance(item, FP_DateTime):
        return "dateTime" if "T" in (item.asStr or "") else "date"
    if isinstance(item, ResourceNode) and isinstance(item.path, str):
        return item.path.removeprefix("System.").replace("Decimal", "decimal")
    return None


def _decimal_boundary(value: Any, low: bool) -> Decimal | None:
    if isinstance(value, bool):
        return None
    number = Decimal(str(value))
    exponent = number.as_tuple().exponent
    if not isinstance(exponent, int):
        return None
    half_ulp = Decimal(5).scaleb(exponent - 1)
    return number - half_ulp if low else number + half_ulp


_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_TIME_RE = re.compile(r"^(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")
_TZ_RE = re.compile(r"(Z|[+-]\d{2}:\d{2})$")


def _date_boundary(value: str, low: bool) -> FP_DateTime | None:
    text = _date_part(value, low)
    return FP_DateTime(text) if text else None


def _date_part(value: str, low: bool) -> str | None:
    match = _DATE_RE.match(value)
    if not match:
        return None
    year, month, day = match.groups()
    month = month or ("01" if low else "12")
    if day is None:
        day = "01" if low else f"{calendar.monthrange(int(year), int(month))[1]:02d}"
    return f"{year}-{month}-{day}"


def _time_part(value: str, low: bool) -> str | None:
    match = _TIME_RE.match(value)
    if not match:
        return None
    hour, minute, second, fraction = match.groups()
    fill = "00" if low else "59"
    fraction = (fraction or "")[:3].ljust(3, "0" if low else "9")
    return f"{hour}:{minute or fill}:{second or fill}.{fraction}"


def _time_boundary(value: str, low: bool) -> FP_Time | None:
    text = _time_part(value, low)
    return FP_Time(text) if text else None


def _datetime_boundary(value: str, low: bool) -> FP_DateTime | None:
    date_text, _, time_text = value.partition("T")
    date_part = _date_part(date_text, low)
    if date_part is None:
        return None
    tz_match = _TZ_RE.search(time_text)
    timezone = tz_match.group(1) if tz_match else ("+14:00" if low else "-12:00")
    time_text = time_text[: tz_match.start()] if tz_match else time_text
    time_part = _time_part(time_text or ("00" if low else "23"), low)
    if time_part is None:
        return None
    return FP_DateTime(f"{date_part}T{time_part}{timezone}")


def _has_value(ctx: dict, data: list) -> list:
    """FHIR's ``hasValue()``: a single primitive that has a value (fhirpathpy lacks it; the R4
    invariants per-1, age-1, bdl-10 use it)."""
    if len(data) != 1:
        return [False]
    value = _data(data[0])
    return [value is not None and not isinstance(value, Mapping | list)]


FUNCTIONS: dict[str, dict[str, Any]] = {
    "getResourceKey": {"fn": _get_resource_key},
    "getReferenceKey": {"fn": _get_reference_key, "arity": {0: [], 1: ["TypeSpecifier"]}},
    "join": {"fn": _join, "arity": {0: [], 1: ["String"]}},
    "extension": {"fn": _extension, "arity": {1: ["String"]}},
    "lowBoundary": {"fn": _low_boundary},  # the optional precision argument is not supported
    "highBoundary": {"fn": _high_boundary},
    "hasValue": {"fn": _has_value},
}


# --- evaluation ----------------------------------------------------------------------------


def _no_trace(label: str, items: Any) -> None:
    return None


class Expression:
    """One FHIRPath expression, parsed once and evaluated against many focus nodes."""

    __slots__ = ("_root", "text", "variables")

    def __init__(self, text: str) -> None:
        self.text = text
        ast = parse(text)
        self._root = ast["children"][0]
        self.variables = referenced_variables(ast)

    @classmethod
    def of_node(cls, node: dict[str, Any], text: str) -> Expression:
        """A part of a parsed expression (its AST node), to be evaluated on its own."""
        expression = cls.__new__(cls)
        expression.text = text
        expression._root = node
        expression.variables = referenced_variables(node)
        return expression

    def __call__(self, focus: list, env: dict[str, Any]) -> list:
        """Evaluate on ``focus`` (a list of nodes); ``env`` holds %variables. Returns raw nodes."""
        ctx = {
            "dataRoot": focus,
            "$this": focus,
            "vars": env,
            "model": R4_MODEL,
            "userInvocationTable": FUNCTIONS,
            "traceFn": _no_trace,  # trace() must not print to a server's stdout
        }
        try:
            return do_eval(ctx, focus, self._root)
        except Exception as exc:  # fhirpathpy raises bare Exception/TypeError on bad data
            raise FhirPathEvaluationError(f"{self.text!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def compile_expression(text: str) -> Expression:
    """Compile ``text``; raises FhirPathSyntaxError on invalid syntax."""
    return Expression(text)


def evaluate(expression: Expression, value: Any) -> list:
    """``expression`` on one JSON value (a resource or one of its elements) as plain Python values,
    ``%context`` being that value: how profile invariants are checked."""
    reset_clock()
    return [to_python(item) for item in expression([value], {**STANDARD_VARIABLES, "context": value})
            if is_value(item)]


def resource_node(resource: Mapping[str, Any]) -> ResourceNode:
    """Wrap a resource so member access tracks FHIR types (choice types, ofType)."""
    return ResourceNode.create_node(resource, resource.get("resourceType"))


def element_node(value: Any, path: str) -> ResourceNode:
    """Wrap an element whose definition path is known (``Observation.component``), so its choice
    elements resolve (``value`` finds ``valueQuantity``) as they do under a resource."""
    return ResourceNode.create_node(value, path)


_TEMPORAL_TYPES = frozenset({"date", "dateTime", "instant", "time"})


def typed_value(value: Any, fhir_type: str) -> Any:
    """A constant as the engine expects it: temporal values as typed nodes (so
    ``birthDate = %date`` compares dates, not strings), numbers as Decimal/int (so they
    work as indexes and in arithmetic)."""
    if isinstance(value, float):
        return Decimal(str(value))
    if fhir_type in _TEMPORAL_TYPES:
        return ResourceNode.create_node(value, fhir_type)
    return value


_DATETIME_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))?$")


def compare_datetimes(first: str, second: str) -> int | None:
    """FHIRPath's ordering of two FHIR dateTime values (-1, 0, 1), or None when their precisions
    leave it undecided (``2020`` against ``2020-03-01``) or either is not a dateTime. Written out
    because fhirpathpy's FP_DateTime is slow to build, and per-1 compares every Period."""
    a, b = _DATETIME_RE.match(first), _DATETIME_RE.match(second)
    if a is None or b is None:
        return None
    if a.group(4) and b.group(4):  # both instants on the time line (a time carries its zone)
        try:
            left = datetime.fromisoformat(first.replace("Z", "+00:00"))
            right = datetime.fromisoformat(second.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (left > right) - (left < right)
    parts_a = [int(p) for p in a.groups()[:3] if p]
    parts_b = [int(p) for p in b.groups()[:3] if p]
    for x, y in zip(parts_a, parts_b, strict=False):
        if x != y:
            if a.group(4) or b.group(4):  # a local date against an instant: a day apart may be zones apart
                dates = [date(*(parts + [1] * (3 - len(parts)))) for parts in (parts_a, parts_b)]
                if len(parts_a) == len(parts_b) == 3 and abs((dates[0] - dates[1]).days) <= 1:
                    return None
            return -1 if x < y else 1
    if len(parts_a) == len(parts_b) and not a.group(4) and not b.group(4):
        return 0
    return None


def reset_clock() -> None:
    """now()/today() are fixed per evaluation in FHIRPath; we fix them per resource."""
    _clock.reset()


def to_python(item: Any) -> Any:
    """Turn an engine result item into a plain JSON-compatible value for a row."""
    value = _data(item)
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, float):
        return value
    if isinstance(value, FP_DateTime | FP_Time):
        return value.asStr
    if isinstance(value, FP_Quantity):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _number(value: Decimal) -> int | float:
    """Integers stay integers (``2 + 3`` is 5), anything with a scale becomes a float."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= 0:
        return int(value)
    return float(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return to_python(value)


def is_value(item: Any) -> bool:
    """False for the artifacts fhirpathpy surfaces from ``_element`` primitive extensions
    (the extension object itself, and ``null`` placeholders of ``_given: [null, {...}]``)."""
    value = _data(item)
    if value is None:
        return False
    return not (isinstance(value, Mapping) and list(value.keys()) == ["extension"])


def _data(item: Any) -> Any:
    return item.data if isinstance(item, ResourceNode) else item
