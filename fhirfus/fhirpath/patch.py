"""FHIRPath Patch (R4 fhirpatch.html): a ``Parameters`` resource of ``operation``s — ``add``,
``insert``, ``delete``, ``replace``, ``move`` — applied to a resource's JSON.

Paths are located, not just evaluated: an operation changes the element a path names, so each
path is walked step by step over the JSON, keeping where every item sits (its parent, name and
index). The steps understood are the ones patches use: the resource type, element names (choice
elements by their base name: ``Observation.value``), ``[n]``, ``.where(criteria)`` (criteria in
full FHIRPath, evaluated on each item), ``.first()``, ``.last()``. Anything else is a 400 naming
the operation, never a guess.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhirfus.errors import InvalidRequest
from fhirfus.fhir.elements import element_model
from fhirfus.fhir.validation import parameter_list, parameter_parts
from fhirfus.fhirpath.engine import (
    FhirPathEvaluationError,
    FhirPathSyntaxError,
    FhirPathTooCostly,
    compile_expression,
    evaluate,
)

OPERATIONS = ("add", "insert", "delete", "replace", "move")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_INDEX = re.compile(r"\[([0-9]{1,9})\]")  # ASCII digits only, and few of them: int() of anything else fails


class PatchError(InvalidRequest):
    """The patch cannot be applied (400, naming the operation)."""


@dataclass
class _Spot:
    """Where one item sits: ``parent[name]`` or ``parent[name][index]``; ``table`` is its type's."""

    parent: dict
    name: str
    index: int | None
    table: str | None
    parent_table: str | None = None

    def get(self) -> Any:
        value = self.parent[self.name]
        return value if self.index is None else value[self.index]


def is_fhirpath_patch(body: Any) -> bool:
    return isinstance(body, Mapping) and body.get("resourceType") == "Parameters"


def apply(resource: dict, parameters: Mapping[str, Any]) -> dict:
    """The patched copy of ``resource``; ``PatchError`` if an operation does not apply."""
    patched = copy.deepcopy(resource)
    for index, parameter in enumerate(parameter_list(parameters)):
        where = f"Parameters.parameter[{index}]"
        if not isinstance(parameter, Mapping) or parameter.get("name") != "operation":
            raise PatchError("Every parameter of a FHIRPath Patch is an 'operation'", where)
        parts = _parts(parameter, where)
        kind = parts.get("type")
        if kind not in OPERATIONS:
            raise PatchError(f"Operation type must be one of {', '.join(OPERATIONS)}, not {kind!r}", f"{where}.type")
        _APPLY[kind](patched, parts, where)
    return patched


def _parts(parameter: Mapping[str, Any], where: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for part in parameter_parts(parameter, where):
        name = part["name"]
        if name == "value":
            found["value"] = _value(part, where)
        else:
            values = [v for k, v in part.items() if k.startswith("value")]
            if len(values) != 1:
                raise PatchError(f"Part '{name}' needs one value", f"{where}.{name}")
            found[name] = values[0]
    return found


def _value(part: Mapping[str, Any], where: str) -> tuple[str | None, Any]:
    """(the value[x] type suffix or None for nested parts, the JSON value)."""
    typed = [(k[5:], v) for k, v in part.items() if k.startswith("value")]
    if len(typed) == 1:
        return typed[0]
    if len(typed) > 1:
        raise PatchError("A value part has one value[x]", f"{where}.value")
    nested = part.get("part")
    if isinstance(nested, list):
        built: dict[str, Any] = {}
        for item in nested:
            name = item.get("name") if isinstance(item, Mapping) else None
            if not isinstance(name, str):
                raise PatchError("Every nested value part needs a name", f"{where}.value")
            built[name] = _value(item, where)[1]
        return None, built
    raise PatchError("The operation needs a value", f"{where}.value")


# --- locating -----------------------------------------------------------------------------------


def _locate(resource: dict, path: Any, where: str) -> list[_Spot]:
    if not isinstance(path, str) or not path:
        raise PatchError("The operation needs a path", f"{where}.path")
    steps = _steps(path, where)
    root = resource.get("resourceType")
    if not steps or steps[0] != ("name", root):
        raise PatchError(f"Path '{path}' must start with {root}", f"{where}.path")
    holder = {"": resource}
    spots = [_Spot(holder, "", None, root)]
    for kind, argument in steps[1:]:
        spots = _step(spots, kind, argument, path, where)
    return spots


def _steps(path: str, where: str) -> list[tuple[str, str]]:
    steps: list[tuple[str, str]] = []
    rest = path
    while rest:
        rest = rest.lstrip(".")
        name = _NAME.match(rest)
        if rest.startswith(("first()", "last()")):
            steps.append((rest[:rest.index("(")], ""))
            rest = rest[rest.index(")") + 1:]
        elif rest.startswith("where("):
            inner, rest = _balanced(rest[len("where("):], path, where)
            steps.append(("where", inner))
        elif rest.startswith("["):
            index = _INDEX.match(rest)
            if index is None:
                raise PatchError(f"Path '{path}': an index is [n] (n: at most 9 digits 0-9)", f"{where}.path")
            steps.append(("index", index.group(1)))
            rest = rest[index.end():]
        elif name:
            steps.append(("name", name.group(0)))
            rest = rest[name.end():]
        else:
            raise PatchError(f"Path '{path}' uses what FHIRPath Patch paths here do not: '{rest[:20]}'", f"{where}.path")
    return steps


def _balanced(text: str, path: str, where: str) -> tuple[str, str]:
    depth, quote = 1, None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return text[:i], text[i + 1:]
    raise PatchError(f"Path '{path}': unbalanced parentheses", f"{where}.path")


def _step(spots: list[_Spot], kind: str, argument: str, path: str, where: str) -> list[_Spot]:
    if kind == "index":
        n = int(argument)
        return spots[n:n + 1]
    if kind == "first":
        return spots[:1]
    if kind == "last":
        return spots[-1:]
    if kind == "where":
        try:
            criteria = compile_expression(argument)
            return [s for s in spots if evaluate(criteria, s.get()) == [True]]
        except (FhirPathSyntaxError, FhirPathEvaluationError) as exc:
            raise PatchError(f"Path '{path}': {exc}", f"{where}.path") from exc
        except FhirPathTooCostly as exc:
            raise FhirPathTooCostly(f"Path '{path}': {exc}", f"{where}.path") from exc
    found: list[_Spot] = []
    for spot in spots:
        node = spot.get()
        if not isinstance(node, dict):
            continue
        here = node.get("resourceType") if spot.table == "Resource" else spot.table
        key, table = _child(node, here, argument)
        if key is None:
            continue
        value = node[key]
        if isinstance(value, list):
            found.extend(_Spot(node, key, i, table, here) for i in range(len(value)))
        else:
            found.append(_Spot(node, key, None, table, here))
    return found


def _child(node: dict, table: str | None, name: str) -> tuple[str | None, str | None]:
    """The JSON key of element ``name`` in ``node`` (a choice by its base name) and its table."""
    elements = element_model().tables.get(table or "", {})
    for key in [name] + [k for k in node if k.startswith(name) and k[len(name):][:1].isupper()]:
        if key in node:
            element = elements.get(key)
            return key, (element.table if element else None)
    return None, None


def _one(spots: list[_Spot], operation: str, where: str) -> _Spot:
    if len(spots) != 1:
        raise PatchError(f"{operation}: the path must name exactly one element, it names {len(spots)}", f"{where}.path")
    return spots[0]


# --- operations ---------------------------------------------------------------------------------


def _add(resource: dict, parts: dict[str, Any], where: str) -> None:
    spot = _one(_locate(resource, parts.get("path"), where), "add", where)
    node = spot.get()
    name = parts.get("name")
    if not isinstance(node, dict) or not isinstance(name, str) or "value" not in parts:
        raise PatchError("add needs a path to an element, a name and a value", f"{where}.name")
    suffix, value = parts["value"]
    table = node.get("resourceType") if spot.table == "Resource" else spot.table
    elements = element_model().tables.get(table or "", {})
    key = name + (suffix or "") if f"{name}{suffix}" in elements else name
    element = elements.get(key)
    if element is None:
        raise PatchError(f"{table} has no element '{name}'", f"{where}.name")
    if element.many:
        node.setdefault(key, []).append(value)
    elif key in node:
        raise PatchError(f"add: {table}.{key} is already there (use replace)", f"{where}.name")
    else:
        node[key] = value


def _insert(resource: dict, parts: dict[str, Any], where: str) -> None:
    spots = _locate(resource, parts.get("path"), where)
    index = _index(parts.get("index"), "index", where)
    if not spots:
        raise PatchError("insert: the path names no list", f"{where}.path")
    spot = spots[0]
    items = spot.parent[spot.name]
    if not isinstance(items, list) or index > len(items):
        raise PatchError(f"insert: index {index} is outside the list", f"{where}.index")
    items.insert(index, parts["value"][1] if "value" in parts else _missing("value", where))


def _delete(resource: dict, parts: dict[str, Any], where: str) -> None:
    spots = _locate(resource, parts.get("path"), where)
    if not spots:
        return  # deleting what is not there changes nothing (fhirpatch.html)
    spot = _one(spots, "delete", where)
    if spot.name == "":
        raise PatchError("delete: the resource itself cannot be deleted by a patch", f"{where}.path")
    if spot.index is None:
        del spot.parent[spot.name]
        return
    items = spot.parent[spot.name]
    del items[spot.index]
    if not items:
        del spot.parent[spot.name]


def _replace(resource: dict, parts: dict[str, Any], where: str) -> None:
    spot = _one(_locate(resource, parts.get("path"), where), "replace", where)
    if "value" not in parts:
        _missing("value", where)
    if spot.name == "":
        raise PatchError("replace: the resource itself cannot be replaced by a patch", f"{where}.path")
    suffix, value = parts["value"]
    if spot.index is not None:
        spot.parent[spot.name][spot.index] = value
        return
    key = spot.name
    elements = element_model().tables.get(spot.parent_table or "", {})
    current = elements.get(key)
    if suffix and current is not None and key.endswith(current.type[:1].upper() + current.type[1:]):
        other = key[: len(key) - len(current.type)] + suffix  # a choice changing type: valueString → valueQuantity
        if other != key and other in elements:
            del spot.parent[key]
            key = other
    spot.parent[key] = value


def _move(resource: dict, parts: dict[str, Any], where: str) -> None:
    spots = _locate(resource, parts.get("path"), where)
    source, destination = _index(parts.get("source"), "source", where), _index(parts.get("destination"),
                                                                                "destination", where)
    if not spots or spots[0].index is None:
        raise PatchError("move: the path must name a list", f"{where}.path")
    items = spots[0].parent[spots[0].name]
    if source >= len(items) or destination >= len(items):
        raise PatchError(f"move: {source} → {destination} is outside the list of {len(items)}", f"{where}.source")
    items.insert(destination, items.pop(source))


def _index(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PatchError(f"The operation needs '{name}' as a whole number ≥ 0", f"{where}.{name}")
    return value


def _missing(name: str, where: str) -> Any:
    raise PatchError(f"The operation needs a {name}", f"{where}.{name}")


_APPLY = {"add": _add, "insert": _insert, "delete": _delete, "replace": _replace, "move": _move}
