"""Bulk Data kick-off parameters: parsed and checked before a job exists.

Every malformed or unknown parameter is a 400 at kick-off (an ``OperationOutcome`` naming the
parameter), because a job that fails minutes later is much harder for a client to act on. Under
``Prefer: handling=lenient`` unsupported parameters are ignored instead, and the manifest's
``error`` file says which (Bulk Data v2, "Query Parameters").

The result, ``ExportRequest``, is plain data that round-trips through JSON: it is what the job
row stores, so a job restarted by another process exports exactly what was asked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fhirfus.db.visibility import Visibility
from fhirfus.errors import InvalidRequest
from fhirfus.fhir.compartment import compartment
from fhirfus.fhir.dates import parse_date_range
from fhirfus.fhir.validation import parameter_list, require_valid_id, served_types, shown, validate_resource
from fhirfus.interactions.search import match_condition
from fhirfus.search.compiler import Compiler
from fhirfus.search.limits import MAX_OR_VALUES
from fhirfus.search.query import FORMAT_PARAMETERS, RESULT_PARAMETERS, parse_query
from fhirfus.terminology.expansion import Lookup

LEVELS = ("system", "patient", "group")
#: ``_outputFormat`` values the spec says a server SHALL accept (plus '+' decoded as a space).
NDJSON_FORMATS = frozenset(
    {"application/fhir+ndjson", "application/ndjson", "ndjson", "application/fhir ndjson"}
)
#: Parameters of the v2 specification that fhirfus does not implement.
UNSUPPORTED = frozenset({"organizeOutputBy", "allowPartialManifests"})
#: ``includeAssociatedData`` values fhirfus honours (the Provenance of the exported resources).
ASSOCIATED = ("LatestProvenanceResources", "RelevantProvenanceResources")
_SINGLE = ("_since", "_outputFormat")
#: A root element name (``_elements`` names only top-level elements).
_ELEMENT = re.compile(r"^[a-z][A-Za-z0-9]*$")
#: A new ``_typeFilter`` query starts where a comma is followed by ``Type?``; commas inside one
#: query (``status=active,completed``) stay with it.
_TYPE_FILTER_SPLIT = re.compile(r",(?=[A-Z][A-Za-z]+\?)")


@dataclass(frozen=True)
class ExportRequest:
    """What one export selects: level, types, ``_since``, ``_typeFilter`` and patients."""

    level: str = "system"
    group_id: str | None = None
    types: tuple[str, ...] = ()                    # empty: every type the level allows
    since: str | None = None                        # ISO instant (UTC)
    type_filters: tuple[tuple[str, str], ...] = ()  # (type, query string)
    patients: tuple[str, ...] = ()                  # patient ids from the ``patient`` parameter
    ignored: tuple[str, ...] = field(default=())    # lenient mode: what was not applied, and why
    base_url: str = ""                              # for absolute references in _typeFilter
    site: str | None = None                         # a site client's export: only its site's rows
    client_id: str | None = None                    # who asked: only they (or an admin) see the job
    operation: dict[str, Any] | None = None         # level "view": the views and options (``bulk.views``)
    elements: tuple[str, ...] = ()                  # ``_elements``: ``name`` or ``Type.name``
    associated: tuple[str, ...] = ()                # ``includeAssociatedData`` (values of ASSOCIATED)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExportRequest:
        return cls(
            level=data.get("level", "system"),
            group_id=data.get("group_id"),
            types=tuple(data.get("types") or ()),
            since=data.get("since"),
            type_filters=tuple((t, q) for t, q in data.get("type_filters") or ()),
            patients=tuple(data.get("patients") or ()),
            ignored=tuple(data.get("ignored") or ()),
            base_url=data.get("base_url") or "",
            site=data.get("site"),
            client_id=data.get("client_id"),
            operation=data.get("operation"),
            elements=tuple(data.get("elements") or ()),
            associated=tuple(data.get("associated") or ()),
        )

    @property
    def since_instant(self) -> datetime | None:
        return datetime.fromisoformat(self.since) if self.since else None


def allowed_types(level: str) -> frozenset[str]:
    """Types an export of ``level`` can contain: all, or the Patient compartment's."""
    if level == "system":
        return served_types()
    return frozenset(t for t in compartment() if t in served_types()) | {"Patient"}


def parse_export_params(
    level: str,
    params: Sequence[tuple[str, str]],
    *,
    group_id: str | None = None,
    lenient: bool = False,
    base_url: str = "",
    seen_by: Visibility,
    terminology: Lookup | None = None,
) -> ExportRequest:
    """Check the kick-off parameters of an export at ``level`` and normalise them (``terminology``:
    where ``_typeFilter``'s ``:in`` finds stored value sets, as in a search)."""
    ignored: list[str] = []
    seen: dict[str, int] = {}
    types: list[str] = []
    filters: list[tuple[str, str]] = []
    patients: list[str] = []
    since: str | None = None
    elements: list[str] = []
    associated: list[str] = []
    for name, value in params:
        seen[name] = seen.get(name, 0) + 1
        if name in _SINGLE and seen[name] > 1:
            raise InvalidRequest(f"{name} may be given only once", name)
        if name in FORMAT_PARAMETERS:
            continue
        if name == "_outputFormat":
            _check_output_format(value)
        elif name == "_type":
            types += _parse_types(level, value)
        elif name == "_since":
            since = _parse_since(value)
        elif name == "_elements":
            elements += _parse_elements(level, value)
        elif name == "includeAssociatedData":
            associated += _parse_associated(value)
        elif name == "_typeFilter":
            filters += _parse_type_filters(level, value, base_url, seen_by, terminology)
        elif name == "patient":
            if level == "system":
                raise InvalidRequest("patient applies to Patient- and Group-level exports only", "patient")
            patients += _parse_patients(value, base_url)
        elif lenient:
            reason = "not supported by fhirfus" if name in UNSUPPORTED else "unknown"
            ignored.append(f"Parameter '{name}' was ignored: {reason}")
        elif name in UNSUPPORTED:
            raise InvalidRequest(
                f"Parameter '{name}' is not supported (send 'Prefer: handling=lenient' to have it ignored)", name
            )
        else:
            raise InvalidRequest(f"Unknown $export parameter '{name}'", name)
    if len(filters) > MAX_OR_VALUES:  # each is one more subquery of the selection
        raise InvalidRequest(f"The export has {len(filters)} _typeFilter queries; the limit is {MAX_OR_VALUES} "
                             "values", "_typeFilter")
    if types:
        for res_type, _ in filters:
            if res_type not in types:
                ignored.append(f"_typeFilter for {res_type} was ignored: {res_type} is not in _type")
        filters = [(t, q) for t, q in filters if t in types]
    return ExportRequest(
        level=level,
        group_id=group_id,
        types=tuple(dict.fromkeys(types)),
        since=since,
        type_filters=tuple(dict.fromkeys(filters)),
        patients=tuple(dict.fromkeys(patients)),
        ignored=tuple(ignored),
        base_url=base_url,
        elements=tuple(dict.fromkeys(elements)),
        associated=tuple(dict.fromkeys(associated)),
    )


def _parse_associated(value: str) -> list[str]:
    values = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in values if v not in ASSOCIATED]
    if unknown or not values:
        raise InvalidRequest(f"includeAssociatedData {', '.join(map(shown, unknown)) or 'is empty'}: fhirfus "
                             f"supports {' and '.join(ASSOCIATED)}", "includeAssociatedData")
    return values


def _parse_elements(level: str, value: str) -> list[str]:
    """``name`` (every type that has it) or ``Type.name``; root elements only."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise InvalidRequest("_elements must list at least one element", "_elements")
    for name in names:
        res_type, dot, element = name.rpartition(".")
        if dot and (res_type not in allowed_types(level) or not element):
            raise InvalidRequest(f"_elements names {shown(name)}: {shown(res_type)} is not a type this export "
                                 "can contain", "_elements")
        if not _ELEMENT.match(element):
            raise InvalidRequest(f"_elements names {shown(name)}: only root elements like 'status' or "
                                 "'Observation.status' are allowed", "_elements")
    return names


def _check_output_format(value: str) -> None:
    if value.strip().lower() not in NDJSON_FORMATS:
        raise InvalidRequest(
            f"_outputFormat '{value}' is not supported; use application/fhir+ndjson, application/ndjson or ndjson",
            "_outputFormat",
        )


def _parse_types(level: str, value: str) -> list[str]:
    types = [t.strip() for t in value.split(",") if t.strip()]
    if not types:
        raise InvalidRequest("_type must list at least one resource type", "_type")
    allowed = allowed_types(level)
    for res_type in types:
        if res_type not in served_types():
            raise InvalidRequest(f"Unknown resource type '{res_type}' in _type", "_type")
        if res_type not in allowed:
            raise InvalidRequest(
                f"{res_type} is not in the Patient compartment, so a {level}-level export cannot contain it",
                "_type",
            )
    return types


def _parse_since(value: str) -> str:
    """A FHIR instant (a dateTime with at least a day is accepted too: its start is used)."""
    try:
        low, _ = parse_date_range(value.strip().replace(" ", "+"))
    except ValueError as exc:
        raise InvalidRequest(f"_since must be a FHIR instant such as 2024-01-31T12:00:00Z, got '{value}'",
                             "_since") from exc
    return low.isoformat()


def _parse_type_filters(
    level: str, value: str, base_url: str, seen_by: Visibility, terminology: Lookup | None = None,
) -> list[tuple[str, str]]:
    """``Type?query`` items; each query must be a valid search of that type (checked now)."""
    filters = []
    for item in _TYPE_FILTER_SPLIT.split(value):
        res_type, mark, query = item.partition("?")
        res_type = res_type.strip()
        if not mark or not res_type or not query:
            raise InvalidRequest(f"_typeFilter must look like Type?param=value, got '{item}'", "_typeFilter")
        if res_type not in served_types():
            raise InvalidRequest(f"Unknown resource type '{res_type}' in _typeFilter", "_typeFilter")
        if res_type not in allowed_types(level):
            raise InvalidRequest(f"{res_type} is not in the Patient compartment ('{item}')", "_typeFilter")
        pairs = parse_qsl(query, keep_blank_values=True)
        for name, _ in pairs:
            if name.partition(":")[0] in RESULT_PARAMETERS or name in FORMAT_PARAMETERS:
                raise InvalidRequest(f"_typeFilter cannot use the result parameter '{name}'", "_typeFilter")
        try:
            parsed = parse_query(res_type, pairs, strict=True)
        except InvalidRequest as exc:
            raise InvalidRequest(f"_typeFilter '{item}': {exc.message}", "_typeFilter") from exc
        if not parsed.criteria:
            raise InvalidRequest(f"_typeFilter '{item}' has no search criteria", "_typeFilter")
        try:  # values (dates, numbers, references) are checked when compiled: do it now, not in the job
            match_condition(seen_by.resources(), {res_type: parsed}, Compiler(base_url, seen_by, terminology))
        except InvalidRequest as exc:
            raise InvalidRequest(f"_typeFilter '{item}': {exc.message}", "_typeFilter") from exc
        filters.append((res_type, query))
    return filters


def _parse_patients(value: str, base_url: str) -> list[str]:
    """``Patient/id`` references (comma-separated in a form, one per Parameters entry)."""
    ids = []
    for reference in (r.strip() for r in value.split(",")):
        if not reference:
            continue
        text = reference
        if base_url and text.startswith(base_url.rstrip("/") + "/"):
            text = text[len(base_url.rstrip("/")) + 1:]
        parts = text.split("/")
        if len(parts) < 2 or parts[0] != "Patient" or not parts[1]:
            raise InvalidRequest(f"patient must be a reference like Patient/123, got {shown(reference)}", "patient")
        require_valid_id(parts[1], "Patient", "patient")
        ids.append(parts[1])
    return ids


def parameters_resource_pairs(body: Any) -> list[tuple[str, str]]:
    """Name/value pairs of a kick-off ``Parameters`` body (the v2 way to POST a kick-off)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("A POST kick-off body must be a Parameters resource", "Parameters")
    validate_resource(body, "Parameters")  # a valid Parameters resource: what is read below has its types
    pairs: list[tuple[str, str]] = []
    for index, parameter in enumerate(parameter_list(body)):
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if not isinstance(name, str):
            raise InvalidRequest("Every parameter needs a name", f"Parameters.parameter[{index}].name")
        value = _parameter_value(parameter)
        if value is None:
            raise InvalidRequest(f"Parameter '{name}' has no supported value[x]", f"Parameters.parameter[{index}]")
        pairs.append((name, value))
    return pairs


def _parameter_value(parameter: dict) -> str | None:
    for key, value in parameter.items():
        if not key.startswith("value"):
            continue
        if key == "valueReference" and isinstance(value, dict):
            return value.get("reference")
        if isinstance(value, str | int | bool):
            return str(value).lower() if isinstance(value, bool) else str(value)
    return None
