"""Operation inputs: the query string's parameters, then a ``Parameters`` body's — one value per
name (``value[x]``, or ``resource``), or every value of a repeated name where asked."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fhirfus.errors import InvalidRequest
from fhirfus.fhir.validation import parameter_list

Inputs = dict[str, Any]


def inputs(query: Iterable[tuple[str, str]], body: Any, *, repeated: frozenset[str] = frozenset()) -> Inputs:
    """The operation's parameters; names in ``repeated`` collect every value in a list."""
    found: Inputs = {}
    for name, value in query:
        _put(found, name, value, repeated)
    if body is None:
        return found
    if not isinstance(body, Mapping) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("The body of an operation must be a Parameters resource", "resourceType")
    for index, parameter in enumerate(parameter_list(body)):
        if not isinstance(parameter, Mapping) or not isinstance(parameter.get("name"), str):
            raise InvalidRequest("Every parameter needs a name", f"Parameters.parameter[{index}]")
        values = [v for k, v in parameter.items() if k.startswith("value") or k == "resource"]
        if len(values) != 1:
            raise InvalidRequest(f"Parameter '{parameter['name']}' needs exactly one value",
                                 f"Parameters.parameter[{index}]")
        _put(found, parameter["name"], values[0], repeated)
    return found


def _put(found: Inputs, name: str, value: Any, repeated: frozenset[str]) -> None:
    if name in repeated:
        found.setdefault(name, []).append(value)
    else:
        found[name] = value
