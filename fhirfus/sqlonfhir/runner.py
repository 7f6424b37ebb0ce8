"""SQL on FHIR v2 ViewDefinition runner: FHIR resources in, flat rows (dicts) out.

The view is validated and every FHIRPath expression compiled once (``compile_view``); rows are
then streamed resource by resource, so memory stays bounded by one resource's rows and the
core runner needs neither pandas nor pyarrow.  Semantics follow the specification's
processing algorithm: a selection's ``column`` row is cross-joined with the rows of each
nested ``select`` and with the concatenated rows of its ``unionAll`` branches, all evaluated
once per element of ``forEach`` / ``forEachOrNull`` / ``repeat`` (or once on the parent).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fhirfus.fhirpath.engine import (
    BUILTIN_VARIABLES,
    STANDARD_VARIABLES,
    Expression,
    FhirPathEvaluationError,
    FhirPathSyntaxError,
    compile_expression,
    is_value,
    reset_clock,
    resource_node,
    to_python,
    typed_value,
)

__all__ = [
    "CompiledView",
    "ViewDefinitionError",
    "ViewEvaluationError",
    "compile_view",
    "run_view",
    "validate_view",
    "view_columns",
]

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESOURCE_RE = re.compile(r"^[A-Z][A-Za-z]+$")
_SELECT_KEYS = frozenset(
    {"column", "select", "unionAll", "forEach", "forEachOrNull", "repeat", "id", "extension"}
)
_COLUMN_KEYS = frozenset({"name", "path", "type", "collection", "description", "tag", "id", "extension"})
_INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})
#: FHIR type of each ``constant.value[x]`` choice, used to type the %constant for comparisons.
_CONSTANT_TYPES = {
    t[0].upper() + t[1:]: t
    for t in [
        "base64Binary",
        "boolean",
        "canonical",
        "code",
        "date",
        "dateTime",
        "decimal",
        "id",
        "instant",
        "integer",
        "integer64",
        "oid",
        "positiveInt",
        "string",
        "time",
        "unsignedInt",
        "uri",
        "url",
        "uuid",
    ]
}


class ViewDefinitionError(ValueError):
    """The ViewDefinition is structurally invalid; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class ViewEvaluationError(ValueError):
    """A valid view met data it cannot represent (e.g. several values in a scalar column)."""


# --- compiled form ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    """One output column with its compiled path."""

    name: str
    path: Expression
    type: str | None
    collection: bool
    description: str | None

    def value(self, focus: list, env: dict[str, Any]) -> Any:
        """The cell: a list if ``collection``, else the single value or None (many is an error)."""
        items = _values(self.path, focus, env)
        if self.collection:
            return [coerce(to_python(item), self.type) for item in items]
        if not items:
            return None
        if len(items) > 1:
            raise ViewEvaluationError(
                f"column {self.name!r} ({self.path.text}) returned {len(items)} values; "
                "declare it collection: true or narrow the path"
            )
        return coerce(to_python(items[0]), self.type)


@dataclass(frozen=True, slots=True)
class Selection:
    """A compiled ``select`` element; ``names`` are all columns it outputs, in order."""

    columns: tuple[Column, ...] = ()
    selects: tuple[Selection, ...] = ()
    union_all: tuple[Selection, ...] = ()
    for_each: Expression | None = None
    or_null: bool = False
    repeat: tuple[Expression, ...] = ()
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CompiledView:
    """A validated view, reusable across batches of resources."""

    resource: str
    root: Selection
    where: tuple[Expression, ...]
    constants: dict[str, Any]
    columns: tuple[dict[str, Any], ...]

    def rows(self, resource: Mapping[str, Any]) -> list[dict[str, Any]]:
        """All rows one resource contributes (none if it is of another type or filtered out)."""
        if resource.get("resourceType") != self.resource:
            return []
        reset_clock()
        node = resource_node(resource)
        env = {
            **STANDARD_VARIABLES,
            **self.constants,
            "resource": node,
            "rootResource": node,
            "context": node,
            "rowIndex": 0,
        }
        try:
            if not all(_is_true(expr, [node], env) for expr in self.where):
                return []
            return _selection_rows(self.root, [node], env)
        except (FhirPathEvaluationError, ViewEvaluationError) as exc:
            raise ViewEvaluationError(f"{self.resource}/{resource.get('id')}: {exc}") from exc


# --- public API ------------------------------------------------------------------------------


def run_view(view: dict, resources: Iterable[dict]) -> Iterator[dict[str, Any]]:
    """Stream the rows of ``view`` over ``resources`` (column name -> JSON-compatible value).

    Raises ViewDefinitionError before the first row if the view is invalid, and
    ViewEvaluationError when data breaks a column contract (e.g. scalar with many values).
    """
    compiled = compile_view(view)
    for resource in resources:
        yield from compiled.rows(resource)


def validate_view(view: dict) -> list[str]:
    """Every structural problem of ``view`` (empty list when it can run)."""
    return _Compiler().compile(view)[1]


def view_columns(view: dict) -> list[dict]:
    """Output columns in order: name, type, collection, description (for data dictionaries).

    Raises ViewDefinitionError for an invalid view, like run_view."""
    return [dict(column) for column in compile_view(view).columns]


def compile_view(view: dict) -> CompiledView:
    """Validate ``view`` and compile its expressions once; raises ViewDefinitionError."""
    compiled, errors = _Compiler().compile(view)
    if errors or compiled is None:
        raise ViewDefinitionError(errors or ["invalid ViewDefinition"])
    return compiled


# --- evaluation ------------------------------------------------------------------------------


def _selection_rows(sel: Selection, focus: list, env: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of one selection on one focus: iterate (forEach/repeat) or pass the focus through."""
    if sel.repeat:
        items = _repeat_items(sel.repeat, focus, env)
    elif sel.for_each is not None:
        items = _values(sel.for_each, focus, env)
    else:
        return _joined_rows(sel, focus, env)
    rows: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        rows.extend(_joined_rows(sel, [item], {**env, "rowIndex": index}))
    if not items and sel.or_null:
        # The "outer join" row: columns see an empty focus (so %rowIndex is 0), never zero rows.
        rows = _joined_rows(sel, [], {**env, "rowIndex": 0}) or [dict.fromkeys(sel.names)]
    return rows


def _joined_rows(sel: Selection, focus: list, env: dict[str, Any]) -> list[dict[str, Any]]:
    """Cross join: the column row x each nested select's rows x the unionAll branches' rows."""
    rows = [{column.name: column.value(focus, env) for column in sel.columns}]
    for child in sel.selects:
        rows = _cross(rows, _selection_rows(child, focus, env))
        if not rows:
            return rows
    if sel.union_all:
        union = [row for branch in sel.union_all for row in _selection_rows(branch, focus, env)]
        rows = _cross(rows, union)
    return rows


def _cross(left: list[dict[str, Any]], right: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(left) == 1:
        base = left[0]
        return [{**base, **row} for row in right]
    return [{**a, **b} for a in left for b in right]


def _repeat_items(paths: tuple[Expression, ...], focus: list, env: dict[str, Any]) -> list:
    """Depth-first, pre-order closure of ``paths`` (children follow their parent)."""
    out: list = []
    stack = [iter(_children(paths, item, env)) for item in reversed(focus)]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            continue
        out.append(child)
        stack.append(iter(_children(paths, child, env)))
    return out


def _children(paths: tuple[Expression, ...], item: Any, env: dict[str, Any]) -> list:
    return [child for path in paths for child in _values(path, [item], env)]


def _values(expr: Expression, focus: list, env: dict[str, Any]) -> list:
    return [item for item in expr(focus, env) if is_value(item)]


def _is_true(expr: Expression, focus: list, env: dict[str, Any]) -> bool:
    """A ``where`` path must yield a boolean (or nothing, which filters the resource out)."""
    result = [to_python(item) for item in expr(focus, env)]
    if not result:
        return False
    if len(result) == 1 and isinstance(result[0], bool):
        return result[0]
    raise ViewEvaluationError(f"where path {expr.text!r} returned {result!r}, not a boolean")


def coerce(value: Any, fhir_type: str | None) -> Any:
    """Give numbers the Python type their declared FHIR type implies."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return value
    if fhir_type == "decimal":
        return float(value)
    if fhir_type in _INTEGER_TYPES and float(value).is_integer():
        return int(value)
    return value


# --- validation and compilation -------------------------------------------------------------


class _Compiler:
    """Walks a view once, collecting all errors and building the compiled form."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.constant_names: set[str] = set()

    def compile(self, view: Any) -> tuple[CompiledView | None, list[str]]:
        if not isinstance(view, Mapping):
            return None, ["ViewDefinition must be a JSON object"]
        resource = view.get("resource")
        if not isinstance(resource, str) or not _RESOURCE_RE.match(resource):
            self.errors.append("resource: a FHIR resource type name is required")
        constants = self._constants(view.get("constant", []))
        where = self._where(view.get("where", []))
        selects = view.get("select")
        if not isinstance(selects, list) or not selects:
            self.errors.append("select: at least one selection is required")
            selects = []
        root = self._selection({"select": selects}, "view")
        columns = self._output_columns(root, view)
        if self.errors:
            return None, self.errors
        compiled = CompiledView(str(resource), root, tuple(where), constants, tuple(columns))
        return compiled, []

    # constants and where

    def _constants(self, constants: Any) -> dict[str, Any]:
        if not isinstance(constants, list):
            self.errors.append("constant: must be an array")
            return {}
        values: dict[str, Any] = {}
        declared: set[str] = set()  # includes broken constants, so their uses do not cascade errors
        for i, constant in enumerate(constants):
            where = f"constant[{i}]"
            if not isinstance(constant, Mapping):
                self.errors.append(f"{where}: must be an object")
                continue
            name = constant.get("name")
            if not isinstance(name, str) or not _NAME_RE.match(name):
                self.errors.append(f"{where}.name: must match {_NAME_RE.pattern}")
                continue
            if name in declared or name in BUILTIN_VARIABLES:
                self.errors.append(f"{where}.name: {name!r} is already defined")
                continue
            declared.add(name)
            value_keys = [k for k in constant if k.startswith("value")]
            if len(value_keys) != 1 or value_keys[0][5:] not in _CONSTANT_TYPES:
                self.errors.append(f"{where}: exactly one supported value[x] is required")
                continue
            values[name] = typed_value(constant[value_keys[0]], _CONSTANT_TYPES[value_keys[0][5:]])
        self.constant_names = declared
        return values

    def _where(self, where: Any) -> list[Expression]:
        if not isinstance(where, list):
            self.errors.append("where: must be an array")
            return []
        compiled = []
        for i, item in enumerate(where):
            path = item.get("path") if isinstance(item, Mapping) else None
            expr = self._expression(path, f"where[{i}].path")
            if expr is not None:
                compiled.append(expr)
        return compiled

    def _expression(self, text: Any, where: str) -> Expression | None:
        if not isinstance(text, str):
            self.errors.append(f"{where}: must be a FHIRPath string")
            return None
        try:
            expr = compile_expression(text)
        except FhirPathSyntaxError as exc:
            self.errors.append(f"{where}: {exc}")
            return None
        undefined = expr.variables - self.constant_names - BUILTIN_VARIABLES
        if undefined:
            self.errors.append(
                f"{where}: undefined constant(s) {', '.join(sorted('%' + n for n in undefined))}"
            )
            return None
        return expr

    # selections

    def _selection(self, node: Any, where: str) -> Selection:
        if not isinstance(node, Mapping):
            self.errors.append(f"{where}: must be an object")
            return Selection()
        for key in sorted(set(node) - _SELECT_KEYS):
            self.errors.append(f"{where}.{key}: unknown select element")
        iterators = [k for k in ("forEach", "forEachOrNull", "repeat") if k in node]
        if len(iterators) > 1:
            self.errors.append(f"{where}: only one of {', '.join(iterators)} is allowed")
        for_each = None
        if "forEach" in node or "forEachOrNull" in node:
            key = "forEach" if "forEach" in node else "forEachOrNull"
            for_each = self._expression(node[key], f"{where}.{key}")
        repeat = self._repeat(node.get("repeat"), f"{where}.repeat") if "repeat" in node else ()
        columns = tuple(self._columns(node.get("column", []), f"{where}.column"))
        selects = tuple(
            self._selection(child, f"{where}.select[{i}]")
            for i, child in enumerate(self._list(node, "select", where))
        )
        union_all = tuple(
            self._selection(child, f"{where}.unionAll[{i}]")
            for i, child in enumerate(self._list(node, "unionAll", where))
        )
        names = self._names(columns, selects, union_all, where)
        return Selection(columns, selects, union_all, for_each, "forEachOrNull" in node, repeat, names)

    def _list(self, node: Mapping[str, Any], key: str, where: str) -> list:
        value = node.get(key, [])
        if not isinstance(value, list):
            self.errors.append(f"{where}.{key}: must be an array")
            return []
        return value

    def _repeat(self, paths: Any, where: str) -> tuple[Expression, ...]:
        if not isinstance(paths, list) or not paths:
            self.errors.append(f"{where}: must be a non-empty array of FHIRPath strings")
            return ()
        compiled = (self._expression(path, f"{where}[{i}]") for i, path in enumerate(paths))
        return tuple(expr for expr in compiled if expr is not None)

    def _columns(self, columns: Any, where: str) -> Iterator[Column]:
        if not isinstance(columns, list):
            self.errors.append(f"{where}: must be an array")
            return
        for i, column in enumerate(columns):
            here = f"{where}[{i}]"
            if not isinstance(column, Mapping):
                self.errors.append(f"{here}: must be an object")
                continue
            for key in sorted(set(column) - _COLUMN_KEYS):
                self.errors.append(f"{here}.{key}: unknown column element")
            name, collection = column.get("name"), column.get("collection", False)
            if not isinstance(name, str) or not _NAME_RE.match(name):
                self.errors.append(f"{here}.name: must match {_NAME_RE.pattern}")
            if not isinstance(collection, bool):
                self.errors.append(f"{here}.collection: must be a boolean")
            if not isinstance(column.get("type", ""), str):
                self.errors.append(f"{here}.type: must be a string")
            path = self._expression(column.get("path"), f"{here}.path")
            if path is not None and isinstance(name, str):
                yield Column(name, path, column.get("type"), collection is True, column.get("description"))

    def _names(
        self,
        columns: tuple[Column, ...],
        selects: tuple[Selection, ...],
        union_all: tuple[Selection, ...],
        where: str,
    ) -> tuple[str, ...]:
        """Column names in output order; duplicates and mismatched unionAll branches are errors."""
        names = [column.name for column in columns]
        for child in selects:
            names.extend(child.names)
        if union_all:
            first = union_all[0].names
            for i, branch in enumerate(union_all[1:], start=1):
                if branch.names != first:
                    self.errors.append(
                        f"{where}.unionAll[{i}]: columns {list(branch.names)} differ from "
                        f"unionAll[0] columns {list(first)} (names and order must match)"
                    )
            names.extend(first)
        reported = {
            n for child in (*selects, *union_all[:1]) for n in child.names if child.names.count(n) > 1
        }
        duplicates = sorted({n for n in names if names.count(n) > 1} - reported)
        if duplicates:
            self.errors.append(f"{where}: column(s) defined more than once: {', '.join(duplicates)}")
        return tuple(names)

    def _output_columns(self, root: Selection, view: Mapping[str, Any]) -> list[dict[str, Any]]:
        by_name: dict[str, Column] = {}
        self._collect_columns(root, by_name)
        return [
            {"name": name, "type": c.type, "collection": c.collection, "description": c.description}
            for name in root.names
            if (c := by_name.get(name)) is not None
        ]

    def _collect_columns(self, sel: Selection, out: dict[str, Column]) -> None:
        for column in sel.columns:
            out.setdefault(column.name, column)
        for child in (*sel.selects, *sel.union_all):
            self._collect_columns(child, out)
