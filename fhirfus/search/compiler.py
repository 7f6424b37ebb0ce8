"""Search criteria compiled to SQL over the index tables.

Every criterion becomes a boolean condition on a ``resources`` alias, mostly of the form
``pk IN (SELECT resource_pk FROM search_<type> WHERE res_type = … AND param = … AND <value>)``;
several values of one criterion are OR-ed inside that sub-select, several criteria AND-ed.
Chains join references to their targets, ``_has`` joins back from the referring resources.
Nothing is filtered in Python.

Several plain criteria are not left to the planner's estimates (which, on tables that grew since
their last ``ANALYZE``, can take a code matching thousands of rows for one matching a single row
and start there). As Blaze does, the search starts from one criterion, the *lead*, and checks
every other one resource by resource: ``EXISTS (SELECT 1 FROM search_<type> WHERE resource_pk =
pk AND param = … AND <value> OFFSET 0)``. Only the index on ``resource_pk`` can serve a probe: it
names no ``res_type``, with which every value index begins, and compares a reference's target id
as an expression (the reference B-tree begins with the target id: a planner without statistics
took it and read every reference to a popular Patient for each probe). ``OFFSET 0`` keeps
PostgreSQL from turning the probe into a join it could reorder. The lead is the criterion with
the fewest index rows, counted up to a cap when the search runs (``search.lead``); the kind of
its parameter (``lead_rank``: a reference to one resource before an identifier before a code …)
breaks ties.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    Table,
    and_,
    bindparam,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

from fhirfus.db.tables import (
    search_composite,
    search_date,
    search_number,
    search_quantity,
    search_reference,
    search_string,
    search_token,
    search_uri,
)
from fhirfus.db.visibility import Visibility
from fhirfus.errors import InvalidRequest
from fhirfus.fhir.dates import UTC_MAX, UTC_MIN
from fhirfus.fhir.references import reference_target
from fhirfus.search.extraction import NOT_EXTRACTED, OF_TYPE, normalize_string
from fhirfus.search.query import ANY_TYPE, Criterion, ParamRef, component_types, split_composite, unescape_dollar
from fhirfus.search.registry import reference_subset, stored_under
from fhirfus.search.values import ANY, parse_date, parse_number, parse_quantity, parse_token
from fhirfus.terminology.expansion import Lookup, ValueSetError, expand

#: Modifiers that match the resources having *no* index row that matches the value.
NEGATING = ("not", "not-in")

TABLE_OF = {
    "token": search_token,
    "string": search_string,
    "date": search_date,
    "reference": search_reference,
    "number": search_number,
    "quantity": search_quantity,
    "uri": search_uri,
    "composite": search_composite,
}


class Compiler:
    """Compiles criteria for one request (knows the server's base URL for absolute references)."""

    def __init__(self, base_url: str, seen_by: Visibility, terminology: Lookup | None = None) -> None:
        """``seen_by``: whose request it is (a chain or ``_has`` must not match through resources
        the caller may not see). ``terminology``: where ``:in`` finds the ValueSets and CodeSystems
        that are not part of fhirfus's own terminology (``repository.terminology_lookup``: those
        stored here)."""
        self.base_url = base_url.rstrip("/")
        self.seen_by = seen_by
        self.terminology = terminology
        self._lookups: dict[int, tuple[Criterion, Select | None]] = {}

    # --- entry points ------------------------------------------------------------------------

    def criterion(self, alias: FromClause, criterion: Criterion) -> ColumnElement[bool]:
        rows = self.index_lookup(criterion)
        if rows is not None:  # the lookup the lead's count built, reused
            return alias.c.pk.in_(rows)
        return self.condition(alias, criterion.ref, criterion.values, criterion.name)

    def condition(self, alias: FromClause, ref: ParamRef, values: tuple[str, ...], name: str) -> ColumnElement[bool]:
        if ref.has_source is not None:
            return self._has(alias, ref, values, name)
        if ref.chains:
            return self._chain(alias, ref, values, name)
        code = ref.param.code
        if code == "_id":
            return self._id(alias, ref, values, name)
        if code == "_lastUpdated":  # a column of every resource, never in the index tables
            if ref.modifier == "missing":
                return self._always_present(values, name)
            return or_(*[self._last_updated(alias, value, name) for value in values])
        if ref.modifier == "missing":
            return self._missing(alias, ref, values, name)
        rows = self._index_rows(ref, values, name)
        return alias.c.pk.not_in(rows) if ref.modifier in NEGATING else alias.c.pk.in_(rows)

    def index_lookup(self, criterion: Criterion) -> Select | None:
        """``SELECT resource_pk FROM search_<type> WHERE …`` when ``criterion`` is one plain lookup in
        an index table (not a chain, ``_has``, ``:missing``, ``:not`` nor a column of ``resources``);
        None otherwise. Lets a single-criterion search page and count on the index alone."""
        known = self._lookups.get(id(criterion))
        if known is not None and known[0] is criterion:
            return known[1]
        rows = self._index_rows(criterion.ref, criterion.values, criterion.name) if is_plain(criterion) else None
        self._lookups[id(criterion)] = (criterion, rows)  # built once a request: counted, then led
        return rows

    def probe(self, alias: FromClause, criterion: Criterion) -> ColumnElement[bool]:
        """A plain criterion checked for ``alias``'s row alone, through the index on ``resource_pk``
        (the form of every criterion but a search's lead: see the module's docstring)."""
        table, conditions = self._index_conditions(criterion.ref, criterion.values, criterion.name, probing=True)
        return exists(select(literal(1)).select_from(table)
                      .where(table.c.resource_pk == alias.c.pk, *conditions).offset(0))

    def _index_rows(self, ref: ParamRef, values: tuple[str, ...], name: str) -> Select:
        """The index rows of resources with any of ``values`` for ``ref`` (modifiers applied)."""
        table, conditions = self._index_conditions(ref, values, name)
        return select(table.c.resource_pk).where(_of_type(table, ref), *conditions)

    def _index_conditions(
        self, ref: ParamRef, values: tuple[str, ...], name: str, probing: bool = False,
    ) -> tuple[Table, list]:
        """The index table of ``ref`` and the conditions on its rows, but the resource type's.
        ``probing``: for one resource's rows, which only the index on ``resource_pk`` may serve."""
        code, kind = ref.param.code, ref.param.type
        if kind == "reference" and ref.modifier == "identifier":
            kind, code = "token", f"{code}:identifier"  # Reference.identifier, indexed as a token
        elif kind == "token" and ref.modifier == "of-type":
            code = f"{code}{OF_TYPE}"  # Identifier.type coding with the value, indexed apart
        table = TABLE_OF.get(kind)
        if table is None:
            raise InvalidRequest(f"Search by '{name}' ({ref.param.type}) is not supported", name)
        build = partial(self._reference, probing=True) if probing and kind == "reference" else getattr(self, f"_{kind}")
        if kind != "composite":
            values = tuple(unescape_dollar(value) for value in values)
        matches = or_(*[build(table, ref, value, name) for value in values])
        return table, [param_rows(table, ref.res_type, code), matches]

    # --- special parameters, chains, reverse chains ------------------------------------------

    def _id(self, alias: FromClause, ref: ParamRef, values: tuple[str, ...], name: str) -> ColumnElement[bool]:
        if ref.modifier == "missing":
            return self._always_present(values, name)
        condition = alias.c.res_id.in_([v for v in values if v])
        return not_(condition) if ref.modifier == "not" else condition

    @staticmethod
    def _always_present(values: tuple[str, ...], name: str) -> ColumnElement[bool]:
        """``:missing`` of a value every resource has."""
        return false() if _missing_wanted(values, name) else true()

    def _last_updated(self, alias: FromClause, value: str, name: str) -> ColumnElement[bool]:
        query = parse_date(value, name)
        return point_condition(query.prefix, alias.c.last_updated, query.low, query.high)

    def _missing(self, alias: FromClause, ref: ParamRef, values: tuple[str, ...], name: str) -> ColumnElement[bool]:
        wanted = _missing_wanted(values, name)
        table = TABLE_OF[ref.param.type]
        present = exists().where(
            table.c.resource_pk == alias.c.pk, _of_type(table, ref), param_rows(table, ref.res_type, ref.param.code)
        )
        return not_(present) if wanted else present

    def _chain(self, alias: FromClause, ref: ParamRef, values: tuple[str, ...], name: str) -> ColumnElement[bool]:
        """References whose target (of one of the chain's types) matches the chained criterion."""
        target = self.seen_by.resources()  # a chain must not reveal targets the caller may not see
        link = search_reference
        per_type = [
            and_(link.c.target_type == target_type, self.condition(target, chained, values, name))
            for target_type, chained in ref.chains
        ]
        rows = (
            select(link.c.resource_pk)
            .join(target, and_(target.c.res_type == link.c.target_type, target.c.res_id == link.c.target_id))
            .where(
                link.c.res_type == ref.res_type,
                param_rows(link, ref.res_type, ref.param.code),
                local_reference(link, self.base_url),
                target.c.deleted.is_(False),
                or_(*per_type),
            )
        )
        return alias.c.pk.in_(rows)

    def _has(self, alias: FromClause, ref: ParamRef, values: tuple[str, ...], name: str) -> ColumnElement[bool]:
        assert ref.has_source is not None and ref.has_param is not None and ref.has_inner is not None
        source = self.seen_by.resources()
        link = search_reference
        rows = (
            select(link.c.target_id)
            .join(source, source.c.pk == link.c.resource_pk)
            .where(
                link.c.res_type == ref.has_source,
                param_rows(link, ref.has_source, ref.has_param.code),
                link.c.target_type == ref.res_type,
                local_reference(link, self.base_url),
                source.c.deleted.is_(False),
                self.condition(source, ref.has_inner, values, name),
            )
        )
        return alias.c.res_id.in_(rows)

    # --- one value of one type ---------------------------------------------------------------

    def _string(self, table: Table, ref: ParamRef, value: str, name: str) -> ColumnElement[bool]:
        if ref.modifier == "exact":
            return table.c.exact == value
        if ref.modifier == "contains":
            return table.c.value.like(f"%{_like_escape(normalize_string(value))}%", escape="\\")
        return _starts_with(table.c.value, normalize_string(value))

    def _token(self, table: Table, ref: ParamRef, value: str, name: str) -> ColumnElement[bool]:
        if ref.modifier in ("in", "not-in"):
            return valueset_condition(table.c.system, table.c.code, value, name, self.terminology)
        if ref.modifier == "of-type":
            parts = value.split("|", 2)
            if len(parts) != 3 or not parts[1] or not parts[2]:
                raise InvalidRequest(f"'{value}' is not a value for '{name}': expected type-system|type-code|value", name)
            return token_condition(table.c.system, table.c.code, value, name)  # code = "type-code|value"
        if ref.modifier == "text":
            return _starts_with(table.c.text, normalize_string(value))
        return token_condition(table.c.system, table.c.code, value, name)

    def _date(self, table: Table, ref: ParamRef, value: str, name: str) -> ColumnElement[bool]:
        return date_value_condition(table.c.low, table.c.high, value, name)

    def _number(self, table: Table, ref: ParamRef, value: str, name: str) -> ColumnElement[bool]:
        return number_condition(table.c.value, parse_number(value, name))

    def _quantity(self, table: Table, ref: ParamRef, value: str, name: str) -> ColumnElement[bool]:
        return quantity_condition(table.c.value, table.c.system, table.c.code, value, name)

    def _reference(self, table: Table, ref: ParamRef, value: str, name: str, probing: bool = False) -> ColumnElement[bool]:
        """``probing``: the target id is compared as an expression (``target_id || ''``), which no
        index serves, so the planner cannot take the target B-tree for a probe (module docstring)."""
        target_type, target_id, url = self.parse_reference(value, name)
        if target_id is None:
            return url_condition(table, url)
        target = table.c.target_id.concat("") if probing else table.c.target_id
        conditions = [target == target_id, local_reference(table, self.base_url)]
        wanted_type = target_type or ref.modifier
        if wanted_type:
            conditions.append(table.c.target_type == wanted_type)
        return and_(*conditions)

    def _composite(self, table: Table, ref: ParamRef, value: str, name: str) -> ColumnElement[bool]:
        """``code$value``: every component matched on the same row (so from the same element)."""
        kinds = component_types(ref.res_type, ref.param)
        parts = split_composite(value)
        if len(parts) != len(kinds):
            raise InvalidRequest(
                f"'{value}' is not a value for '{name}': expected {len(kinds)} components separated by '$'", name
            )
        return and_(*[self._component(table, n, kind, part, name) for n, (kind, part) in enumerate(zip(kinds, parts, strict=False))])

    def _component(self, table: Table, position: int, kind: str, value: str, name: str) -> ColumnElement[bool]:
        c = table.c
        if position == 0 and kind == "token":
            return token_condition(c.system1, c.code1, value, name)
        if position == 0 and kind == "reference":
            target_type, target_id, url = self.parse_reference(value, name)
            if target_id is None:
                return c.code1 == url
            if target_type:
                return c.code1 == f"{target_type}/{target_id}"
            return c.code1.like(f"%/{_like_escape(target_id)}", escape="\\")
        if position == 1:
            if kind == "token":
                return token_condition(c.system2, c.code2, value, name)
            if kind == "quantity":
                return quantity_condition(c.number2, c.system2, c.code2, value, name)
            if kind == "number":
                return number_condition(c.number2, parse_number(value, name))
            if kind == "date":
                return date_value_condition(c.low2, c.high2, value, name)
            if kind == "string":
                return _starts_with(c.text2, normalize_string(value))
            if kind in ("reference", "uri"):
                return c.code2 == value
        if position == 2 and kind in ("number", "quantity"):
            return number_condition(c.number3, parse_number(value, name))
        raise InvalidRequest(f"Search by '{name}' is not supported: component {position + 1} is a {kind}", name)

    def _uri(self, table: Table, ref: ParamRef, value: str, name: str) -> ColumnElement[bool]:
        """Exact match; ``:below`` / ``:above`` compare string prefixes, as HAPI FHIR does (not path segments)."""
        if ref.modifier == "below":
            return _starts_with(table.c.value, value)
        if ref.modifier == "above":
            # the stored value is a prefix of the search value (compared as text: no LIKE wildcards)
            return func.substr(literal(value), 1, func.length(table.c.value)) == table.c.value
        return table.c.value == value

    def parse_reference(self, value: str, name: str = "reference") -> tuple[str | None, str | None, str]:
        """``Type/id``, ``id``, or an absolute URL (ours → Type/id; foreign → matched by URL)."""
        text = value
        if "://" in value or value.startswith("urn:"):
            if not value.startswith(self.base_url + "/"):
                return None, None, value
            text = value[len(self.base_url) + 1:]
        parts = text.split("/")
        if len(parts) >= 4 and parts[2] == "_history":
            parts = parts[:2]
        if len(parts) == 2 and parts[0] and parts[1]:
            return parts[0], parts[1], value
        if len(parts) == 1 and parts[0]:
            return None, parts[0], value
        raise InvalidRequest(f"'{value}' is not a valid reference for '{name}'", name)


def url_condition(link: FromClause, url: str) -> ColumnElement[bool]:
    """Reference rows whose URL is ``url`` (another server's resource, a ``urn:``, a canonical).

    Written so that an index serves it: a row whose URL ends in ``Type/id`` carries them
    (``extraction.reference_target``) and is found through the target B-tree; every other row
    (canonicals, ``urn:``) has no target id and is found through the partial B-tree on URLs.
    """
    no_target = and_(link.c.target_id.is_(None), link.c.url == url)
    stored_type, stored_id = reference_target(url)
    if stored_id is None:
        return no_target
    return or_(and_(link.c.target_id == stored_id, link.c.target_type == stored_type, link.c.url == url), no_target)


def local_reference(link: FromClause, base_url: str) -> ColumnElement[bool]:
    """Reference index rows that point into this server: relative (``Patient/1``) or absolute
    under its base URL. An absolute URL of another server (``https://ehr.example/fhir/Patient/1``)
    names a resource *there*, whatever its last two segments say: it matches only by its URL."""
    relative = not_(link.c.url.contains("://", autoescape=True))
    base = base_url.rstrip("/")
    return or_(relative, link.c.url.startswith(f"{base}/", autoescape=True)) if base else relative


def token_condition(system: ColumnElement, code: ColumnElement, value: str, name: str) -> ColumnElement[bool]:
    """``system|code``, ``code``, ``|code`` (no system) or ``system|`` (any code of it)."""
    token = parse_token(value)
    conditions = []
    if token.code is not ANY:
        conditions.append(code == token.code)
    if token.system is None:
        conditions.append(system.is_(None))
    elif token.system is not ANY:
        conditions.append(system == token.system)
    if not conditions:
        raise InvalidRequest(f"Empty token value for '{name}'", name)
    return and_(*conditions)


def valueset_condition(
    system: ColumnElement, code: ColumnElement, url: str, name: str, lookup: Lookup | None = None
) -> ColumnElement[bool]:
    """Tokens whose (system, code) is in the value set ``url``; a code without system (the
    ``code`` datatype: ``Observation.status``) matches any code the value set lists."""
    try:
        expansion = expand(url, lookup)
    except ValueSetError as exc:
        raise InvalidRequest(f"{name}: {exc}", name) from exc
    listed = {s: codes for s, codes in expansion.systems.items() if codes is not None}
    conditions = [system == s for s, codes in sorted(expansion.systems.items()) if codes is None]
    if len(listed) == 1:  # one list serves both its system and the codes without one
        (only, codes), = listed.items()
        conditions.append(and_(or_(system == only, system.is_(None)), code.in_(_code_list(codes))))
    elif listed:
        conditions += [and_(system == s, code.in_(_code_list(codes))) for s, codes in sorted(listed.items())]
        conditions.append(and_(system.is_(None), code.in_(_code_list(expansion.codes()))))
    return or_(*conditions) if conditions else false()


#: From this many codes the list is written into the SQL instead of bound one parameter each:
#: a large code system (ICD-10: ~70,000 codes) would pass PostgreSQL's and SQLite's bind limits.
_INLINE_CODES_FROM = 1000


def _code_list(codes: frozenset[str]) -> Any:
    ordered = sorted(codes)
    if len(ordered) < _INLINE_CODES_FROM:
        return ordered
    return bindparam(None, ordered, expanding=True, literal_execute=True, unique=True)


def quantity_condition(
    number: ColumnElement, system: ColumnElement, code: ColumnElement, value: str, name: str
) -> ColumnElement[bool]:
    """``[prefix]number|system|code`` (system and code optional)."""
    query = parse_quantity(value, name)
    conditions = [number_condition(number, query.number)]
    if query.system is not None:
        conditions.append(system == query.system)
    if query.code is not None:
        conditions.append(code == query.code)
    return and_(*conditions)


def _missing_wanted(values: tuple[str, ...], name: str) -> bool:
    """``:missing=true`` (resources without a value) or ``false``; anything else is a 400."""
    if values[-1] not in ("true", "false"):
        raise InvalidRequest(f"{name} must be true or false", name)
    return values[-1] == "true"


def is_plain(criterion: Criterion) -> bool:
    """Whether ``criterion`` is one lookup in an index table: not a chain, ``_has``, ``:missing``,
    ``:not`` nor a column of ``resources`` (``_id``, ``_lastUpdated``)."""
    ref = criterion.ref
    return not (ref.has_source is not None or ref.chains or ref.modifier in ("missing", *NEGATING)
                or ref.param.code in NOT_EXTRACTED)


#: How few resources a plain criterion of each kind tends to match, fewest first: a reference names
#: one resource; an identifier, one record; a code, a kind of record; a date or quantity, a range.
LEAD_ORDER = ("reference", "identifier", "token", "uri", "composite", "date", "number", "quantity", "string")


def lead_rank(criterion: Criterion) -> int:
    """The place of a plain criterion among candidates to lead a search (lower: leads)."""
    ref = criterion.ref
    kind = ref.param.type
    if ref.modifier == "identifier" or (kind == "token" and ref.param.code == "identifier"):
        kind = "identifier"
    elif kind == "token" and ref.modifier in ("text", "in", "below", "above", "of-type"):
        kind = "date"  # a set of codes, or words: a range rather than one code
    return LEAD_ORDER.index(kind) if kind in LEAD_ORDER else len(LEAD_ORDER)


def param_rows(table: Table, res_type: str, code: str) -> ColumnElement[bool]:
    """Index rows of parameter ``code``: its own, and those of the parameters it contains whole
    (``combo-code`` reads ``code`` rows too: ``searchparams.stored_under``); for a reference
    parameter that is another's references of one type, that one's rows of the type
    (``patient`` reads ``subject`` rows of type Patient: ``searchparams.reference_subset``)."""
    return params_rows(table, res_type, (code,))


def params_rows(table: Table, res_type: str, codes: Sequence[str]) -> ColumnElement[bool]:
    """Index rows of any of ``codes`` (a compartment's parameters, say), as ``param_rows`` finds them."""
    if res_type == ANY_TYPE:
        return table.c.param.in_(codes) if len(codes) > 1 else table.c.param == codes[0]
    stored: list[str] = []  # params whose rows are read whole
    of_type: list[ColumnElement[bool]] = []  # a holder's rows of one target type
    for code in codes:
        subset = reference_subset(res_type, code) if "target_type" in table.c else None
        if subset is None:
            stored.extend(stored_under(res_type, code))
        else:
            holder, target_type = subset
            of_type.append(and_(table.c.param == holder, table.c.target_type == target_type))
    stored = list(dict.fromkeys(stored))
    whole = [table.c.param == stored[0] if len(stored) == 1 else table.c.param.in_(stored)] if stored else []
    conditions = whole + of_type
    return conditions[0] if len(conditions) == 1 else or_(*conditions)


def _of_type(table: Table, ref: ParamRef) -> ColumnElement[bool]:
    """Index rows of the parameter's resource type (any type for a system search without ``_type``)."""
    return true() if ref.res_type == ANY_TYPE else table.c.res_type == ref.res_type


def _starts_with(column: ColumnElement, prefix: str) -> ColumnElement[bool]:
    """``column LIKE 'prefix%'``, the prefix's own wildcards escaped (index-friendly)."""
    return column.like(f"{_like_escape(prefix)}%", escape="\\")


def date_value_condition(low: ColumnElement, high: ColumnElement, value: str, name: str) -> ColumnElement[bool]:
    """A date search value (``ge2021``, ``2021-03``…) against a stored ``[low, high)`` range."""
    query = parse_date(value, name)
    return date_condition(query.prefix, low, high, query.low, query.high)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def date_condition(prefix: str, low: ColumnElement, high: ColumnElement, q_low, q_high) -> ColumnElement[bool]:
    """FHIR date comparison of a stored range [low, high) with a search range [q_low, q_high)."""
    # The extra conjuncts (``low < q_high``, ``high > q_low``) follow from the others; they are
    # there so PostgreSQL can answer with a range scan on the (…, low) or (…, high) index.
    contained = and_(low >= q_low, low < q_high, high <= q_high)
    conditions: dict[str, Callable[[], ColumnElement[bool]]] = {
        "eq": lambda: contained,
        "ne": lambda: not_(contained),
        "gt": lambda: high > q_high,
        "lt": lambda: low < q_low,
        "ge": lambda: and_(high > q_low, or_(high > q_high, contained)),
        "le": lambda: and_(low < q_high, or_(low < q_low, contained)),
        "sa": lambda: low >= q_high,
        "eb": lambda: high <= q_low,
        "ap": lambda: _approximately(low, high, q_low, q_high),
    }
    return conditions[prefix]()


def point_condition(prefix: str, moment: ColumnElement, q_low, q_high) -> ColumnElement[bool]:
    """Date comparison of a stored instant (a point, e.g. ``meta.lastUpdated``) with a search range."""
    inside = and_(moment >= q_low, moment < q_high)
    conditions: dict[str, Callable[[], ColumnElement[bool]]] = {
        "eq": lambda: inside,
        "ne": lambda: not_(inside),
        "gt": lambda: moment >= q_high,
        "lt": lambda: moment < q_low,
        "ge": lambda: moment >= q_low,
        "le": lambda: moment < q_high,
        "sa": lambda: moment >= q_high,
        "eb": lambda: moment < q_low,
        "ap": lambda: _approximately(moment, moment, q_low, q_high),
    }
    return conditions[prefix]()


def _approximately(low: ColumnElement, high: ColumnElement, q_low, q_high) -> ColumnElement[bool]:
    """``ap``: overlap with the search range widened by 10 % of its distance from now (≥ 1 day)."""
    distance = abs(datetime.now(UTC) - q_low)
    margin = max(distance / 10, timedelta(days=1))
    return and_(low < _shifted(q_high, margin), high > _shifted(q_low, -margin))


def _shifted(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, clamped to the representable range (``ap0001``, ``ap9999``)."""
    try:
        return moment + delta
    except OverflowError:
        return UTC_MAX if delta > timedelta(0) else UTC_MIN


def number_condition(column: ColumnElement, query) -> ColumnElement[bool]:
    """Numbers: ``eq``/``ne`` use the implicit precision range, the others the value itself."""
    value: Decimal = query.value
    conditions: dict[str, Callable[[], ColumnElement[bool]]] = {
        "eq": lambda: and_(column >= query.low, column < query.high),
        "ne": lambda: not_(and_(column >= query.low, column < query.high)),
        "gt": lambda: column > value,
        "lt": lambda: column < value,
        "ge": lambda: column >= value,
        "le": lambda: column <= value,
        "sa": lambda: column > value,
        "eb": lambda: column < value,
        "ap": lambda: and_(column >= value - abs(value) / 10, column <= value + abs(value) / 10),
    }
    return conditions[query.prefix]()
