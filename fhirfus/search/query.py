"""Parsing of FHIR search parameters into a ``SearchQuery``.

Names are resolved against the official R4 SearchParameter definitions of the resource type
(``fhirfus.search.registry``): modifiers, chains (``subject:Patient.name``), reverse chains
(``_has:Observation:patient:code``) and the result parameters (``_sort``, ``_include``, …).
Unknown parameters are collected in ``ignored`` (or refused in strict mode); malformed values
are always a 400 naming the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fhirfus.errors import InvalidRequest
from fhirfus.fhir.validation import served_types
from fhirfus.fhirpath.paths import selects_identifiers
from fhirfus.search.limits import check_or_values, check_parameters
from fhirfus.search.registry import SearchParam, params_for

#: Parameters that shape the result rather than select resources.
RESULT_PARAMETERS = frozenset(
    {"_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_cursor", "_contained",
     "_containedType", "_totalMethod"}
)
#: Parameters of the HTTP layer, never search criteria.
FORMAT_PARAMETERS = frozenset({"_format", "_pretty"})
#: Standard parameters fhirfus does not implement (treated as unknown).
UNSUPPORTED = frozenset({"_text", "_content", "_list", "_query", "_filter", "_source"})

MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "text", "missing", "in", "not-in", "of-type"},  # not :below/:above (no hierarchies)
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "reference": {"missing", "identifier"},
    "uri": {"below", "above", "missing"},
    "composite": {"missing"},
}

#: The type of a system search without ``_type``: only the parameters every resource has apply.
ANY_TYPE = "Resource"
COMMON_PARAMETERS = frozenset({"_id", "_lastUpdated", "_tag", "_profile", "_security"})


@dataclass(frozen=True)
class ParamRef:
    """A parsed parameter name, possibly chained or reverse-chained."""

    res_type: str
    param: SearchParam
    modifier: str | None = None
    # subject.name → one chained parameter per target type that has it: (("Patient", Patient.name), …)
    chains: tuple[tuple[str, ParamRef], ...] = ()
    has_source: str | None = None          # _has:Observation:patient:code → Observation
    has_param: SearchParam | None = None   # … patient
    has_inner: ParamRef | None = None      # … code (on Observation)


@dataclass(frozen=True)
class Criterion:
    """One ``name=value[,value…]`` pair: its values are OR-ed; several criteria are AND-ed."""

    name: str
    ref: ParamRef
    values: tuple[str, ...]


@dataclass(frozen=True)
class SortKey:
    param: SearchParam
    descending: bool


@dataclass(frozen=True)
class Include:
    """``_include`` / ``_revinclude``: ``Source:param[:Target]`` (param ``*`` = every reference)."""

    source: str
    param: str
    target: str | None
    iterate: bool


@dataclass
class SearchQuery:
    res_type: str
    criteria: list[Criterion] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    count: int | None = None
    summary: str | None = None
    elements: tuple[str, ...] = ()
    total: str = "accurate"
    cursor: str | None = None
    ignored: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)   # what the self link shows


def types_read(ref: ParamRef) -> set[str]:
    """The resource types besides its own whose resources a criterion on ``ref`` matches against:
    chain targets and ``_has`` sources, at every depth. A caller must be allowed to search each:
    a criterion is an answer about them."""
    found: set[str] = set()
    for target, chained in ref.chains:
        found |= {target} | types_read(chained)
    if ref.has_source is not None:
        found.add(ref.has_source)
        if ref.has_inner is not None:
            found |= types_read(ref.has_inner)
    return found


def criteria_types(query: SearchQuery) -> set[str]:
    """Every type besides its own that ``query``'s criteria read (``types_read`` of each)."""
    return set().union(*(types_read(c.ref) for c in query.criteria))


class UnknownParameter(InvalidRequest):
    """An unknown or unsupported parameter (fatal only under ``Prefer: handling=strict``)."""


def split_or(value: str) -> tuple[str, ...]:
    """Split on commas that are not escaped with a backslash.

    ``\\$`` stays escaped: composite values split on ``$`` later (``split_composite``), and the
    other types drop the backslash then (``unescape_dollar``).
    """
    parts, current, escaped = [], [], False
    for char in value:
        if escaped:
            current.append(char if char in ",|\\" else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return tuple(parts)


def params_of(res_type: str) -> Mapping[str, SearchParam]:
    """The parameters of a type; for ``ANY_TYPE`` the common ones (their definitions agree on every type)."""
    if res_type == ANY_TYPE:
        return {code: p for code, p in params_for("Patient").items() if code in COMMON_PARAMETERS}
    return params_for(res_type)


def _lookup(res_type: str, code: str, name: str) -> SearchParam:
    param = params_of(res_type).get(code)
    if param is None or code in UNSUPPORTED or param.type == "special":
        raise UnknownParameter(f"Unknown or unsupported search parameter '{name}' for {res_type}", name)
    return param


def component_types(res_type: str, param: SearchParam) -> tuple[str, ...]:
    """The search types of a composite's components (from the parameters they name)."""
    params = params_of(res_type)
    return tuple(params[code].type if code in params else "unknown" for code, _ in param.components)


def unescape_dollar(value: str) -> str:
    """A non-composite value: ``\\$`` is just a dollar."""
    return value.replace("\\$", "$")


def split_composite(value: str) -> tuple[str, ...]:
    """``a$b`` → ``("a", "b")``; ``\\$`` is a literal dollar inside a component."""
    return tuple(part.replace("\\$", "$") for part in re.split(r"(?<!\\)\$", value))


def parse_name(res_type: str, name: str) -> ParamRef:
    """Resolve ``name`` (with modifiers, chains, ``_has``) against ``res_type``."""
    if name.startswith("_has:"):
        return _parse_has(res_type, name)
    head, dot, rest = name.partition(".")
    code, _, modifier = head.partition(":")
    param = _lookup(res_type, code, name)
    if dot:
        return _parse_chain(res_type, param, modifier, rest, name)
    if modifier:
        if param.type == "reference" and modifier in served_types():
            return ParamRef(res_type, param, modifier)
        allowed = MODIFIERS.get(param.type, {"missing"})
        if modifier not in allowed:
            raise UnknownParameter(f"Unsupported modifier ':{modifier}' on '{code}' ({param.type})", name)
        if modifier == "of-type" and not selects_identifiers(res_type, param.expression):
            raise UnknownParameter(f"':of-type' applies to identifiers; '{code}' is not one", name)
    return ParamRef(res_type, param, modifier or None)


def _parse_has(res_type: str, name: str) -> ParamRef:
    """``_has:Source:reference:rest`` (``rest`` may itself be a ``_has`` or a chain)."""
    parts = name.split(":", 3)
    if len(parts) < 4:
        raise InvalidRequest(f"Malformed _has parameter '{name}' (expected _has:Type:reference:param)", name)
    _, source, ref_code, rest = parts
    if res_type == ANY_TYPE:
        raise UnknownParameter(f"'{name}' needs _type: a reverse chain points at one resource type", name)
    if source not in served_types():
        raise InvalidRequest(f"Unknown resource type '{source}' in '{name}'", name)
    has_param = _lookup(source, ref_code, name)
    if has_param.type != "reference":
        raise InvalidRequest(f"'{ref_code}' of {source} is not a reference parameter ('{name}')", name)
    anchor = SearchParam(code="_has", type="special", expression="")
    return ParamRef(res_type, anchor, has_source=source, has_param=has_param, has_inner=parse_name(source, rest))


def _parse_chain(res_type: str, param: SearchParam, modifier: str, rest: str, name: str) -> ParamRef:
    """``ref[:Type].rest``: the rest is parsed on every target type that knows its first parameter.

    Without ``:Type`` a reference may point at several types (``Observation.subject``); like HAPI
    FHIR, the chain then searches all of them that define the chained parameter (R4: "the
    parameter chain may end up referring to search parameters with the same name on more than one
    kind of resource at once"), and is an unknown parameter when none does.
    """
    if param.type != "reference":
        raise InvalidRequest(f"Cannot chain through '{param.code}': it is not a reference parameter", name)
    if modifier and modifier not in served_types():
        raise InvalidRequest(f"Unknown resource type '{modifier}' in '{name}'", name)
    targets = [modifier] if modifier else [t for t in param.targets if t in served_types()]
    chained_code = rest.partition(".")[0].partition(":")[0]
    candidates = [t for t in targets if chained_code in params_of(t) or chained_code == "_has"]
    if not candidates:
        raise UnknownParameter(f"No target type of '{param.code}' has a search parameter '{chained_code}' ('{name}')", name)
    return ParamRef(res_type, param, None, tuple((t, parse_name(t, rest)) for t in candidates))


def _parse_sort(res_type: str, value: str) -> list[SortKey]:
    keys = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        descending = item.startswith("-")
        code = item.lstrip("-")
        param = params_of(res_type).get(code)
        if param is None or param.type in ("composite", "special") or code in UNSUPPORTED:
            raise InvalidRequest(f"Cannot sort by '{code}' on {res_type}", "_sort")
        keys.append(SortKey(param, descending))
    return keys


def _parse_include(value: str, name: str, iterate: bool) -> Include:
    parts = value.split(":")
    if value == "*":
        return Include("*", "*", None, iterate)
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise InvalidRequest(f"{name} must look like Type:param[:TargetType], got '{value}'", name)
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if source not in served_types():
        raise InvalidRequest(f"Unknown resource type '{source}' in {name}", name)
    if code != "*":
        param = params_for(source).get(code)
        if param is None or param.type != "reference":
            raise InvalidRequest(f"'{code}' is not a reference parameter of {source} ({name})", name)
    if target is not None and target not in served_types():
        raise InvalidRequest(f"Unknown target type '{target}' in {name}", name)
    return Include(source, code, target, iterate)


def _parse_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError as exc:
        raise InvalidRequest(f"_count must be a non-negative integer, got '{value}'", "_count") from exc
    if count < 0:
        raise InvalidRequest(f"_count must be a non-negative integer, got '{value}'", "_count")
    return count


def parse_query(res_type: str, params: Sequence[tuple[str, str]], *, strict: bool = False) -> SearchQuery:
    """Turn URL parameters into a ``SearchQuery`` for ``res_type``."""
    check_parameters(params)
    query = SearchQuery(res_type)
    for name, value in params:
        if name in FORMAT_PARAMETERS:
            continue
        if "\x00" in name or "\x00" in value:  # PostgreSQL text cannot hold NUL: refuse it here, not as a 500
            raise InvalidRequest(f"Search parameter '{name}' contains a NUL character", name.replace("\x00", ""))
        if name.partition(":")[0] in RESULT_PARAMETERS:  # _include:iterate, _revinclude:iterate
            _apply_result_parameter(query, name, value)
            continue
        try:
            ref = parse_name(res_type, name)
        except UnknownParameter as exc:
            if strict:  # name the whole parameter, also when a chained or _has part is unknown
                raise UnknownParameter(exc.message, name) from exc
            query.ignored.append(name)
            continue
        versioned = _versioned_canonical(res_type, ref, value)
        if versioned is not None:
            url, version = versioned
            query.criteria.append(Criterion(name, ref, (url,)))
            query.criteria.append(Criterion("version", parse_name(res_type, "version"), (version,)))
        else:
            values = split_or(value)
            check_or_values(name, values)
            query.criteria.append(Criterion(name, ref, values))
        query.kept.append((name, value))
    return query


def _versioned_canonical(res_type: str, ref: ParamRef, value: str) -> tuple[str, str] | None:
    """``url=http://…|1.0`` on a canonical resource: that url, and that ``version`` (R4 search.html,
    "Searching by canonical URL"); None for anything else."""
    if ref.param.code != "url" or ref.param.type != "uri" or ref.modifier or ref.chains or "," in value:
        return None
    url, bar, version = value.rpartition("|")
    if not bar or not url or not version or "version" not in params_of(res_type):
        return None
    return url, version


def _apply_result_parameter(query: SearchQuery, name: str, value: str) -> None:
    base = name.split(":")[0]
    if base == "_count":
        query.count = _parse_count(value)
    elif base == "_sort":
        check_or_values(name, value.split(","))
        query.sort = _parse_sort(query.res_type, value)
    elif base == "_include":
        query.includes.append(_parse_include(value, name, name.endswith((":iterate", ":recurse"))))
    elif base == "_revinclude":
        query.revincludes.append(_parse_include(value, name, name.endswith((":iterate", ":recurse"))))
    elif base == "_summary":
        if value not in ("true", "false", "count", "data", "text"):
            raise InvalidRequest(f"_summary must be true, false, count, data or text, got '{value}'", "_summary")
        query.summary = None if value == "false" else value
    elif base == "_elements":
        query.elements = tuple(e.strip() for e in value.split(",") if e.strip())
    elif base == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise InvalidRequest(f"_total must be none, estimate or accurate, got '{value}'", "_total")
        query.total = value
    elif base == "_totalMethod":
        query.total = "accurate" if value == "count" else query.total
    elif base == "_cursor":
        query.cursor = value
        return
    else:
        return
    if base != "_totalMethod":
        query.kept.append((name, value))
