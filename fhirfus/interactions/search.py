"""Search: type-level and system-level, as ``searchset`` Bundles.

The query is parsed (``fhirfus.search``), compiled to SQL over the index tables
(``fhirfus.search.compiler``) and paged with keyset cursors over the sort keys plus the
primary key, so ``next``/``previous`` links stay correct while data changes (no OFFSET drift).
``_include``/``_revinclude`` are resolved through the reference index after the page is known.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, Engine, FromClause, Select, and_, func, or_, select, true

from fhirfus.auth.access import Access
from fhirfus.db.tables import search_reference
from fhirfus.db.visibility import content_text
from fhirfus.errors import InvalidRequest
from fhirfus.fhir.dates import UTC_MIN
from fhirfus.fhir.projection import project
from fhirfus.fhir.validation import require_known_type
from fhirfus.interactions import binary
from fhirfus.interactions.paging import decode_cursor, encode_cursor, fits, page_url
from fhirfus.search.compiler import TABLE_OF, Compiler, is_plain, lead_rank, local_reference, param_rows
from fhirfus.search.lead import Counter, index_counter, pick_lead
from fhirfus.search.query import ANY_TYPE, Criterion, Include, SearchQuery, SortKey, criteria_types, parse_query
from fhirfus.store import repository
from fhirfus.store.repository import Store

MAX_INCLUDE_ROUNDS = 4
_SENTINELS: dict[str, Any] = {
    "string": "", "token": "", "reference": "", "uri": "", "date": UTC_MIN,
    "number": Decimal("-1e30"), "quantity": Decimal("-1e30"),
}
_VALUE_COLUMN = {
    "string": "value", "token": "code", "reference": "target_id", "uri": "value", "date": "low",
    "number": "value", "quantity": "value",
}


@dataclass(frozen=True)
class Row:
    """A matched resource with its stored JSON ``text`` (parsed only when needed)."""

    pk: int
    res_type: str
    res_id: str
    text: str

    def document(self) -> dict:
        return orjson.loads(self.text)


def _sort_column(rows: FromClause, key: SortKey, types: Sequence[str]) -> ColumnElement:
    """The value a resource sorts by: its lowest value ascending, its highest descending.

    A parameter can have several values per resource (names, Periods); like HAPI FHIR, ascending
    order uses the lowest and descending order the highest. Resources without a value sort as the
    lowest possible value: first ascending, last descending.
    """
    code = key.param.code
    if code == "_id":
        return rows.c.res_id
    if code == "_lastUpdated":
        return rows.c.last_updated
    table = TABLE_OF[key.param.type]
    column = table.c[_VALUE_COLUMN[key.param.type]]
    aggregate = func.max(column) if key.descending else func.min(column)
    # Which rows hold the values depends on the type (``stored_under``): a search over several
    # types reads each type's own.
    if len(types) > 1:
        of_param = or_(*(and_(table.c.res_type == t, param_rows(table, t, code)) for t in types))
    else:
        of_param = param_rows(table, types[0] if types else ANY_TYPE, code)
    value = select(aggregate).where(table.c.resource_pk == rows.c.pk, of_param).scalar_subquery()
    return func.coalesce(value, _SENTINELS[key.param.type])


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    if isinstance(value, Decimal | float):
        return {"d": str(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "t" in value:
        return datetime.fromisoformat(value["t"])
    if isinstance(value, dict) and "d" in value:
        return Decimal(value["d"])
    return value


def _kind(key: SortKey) -> type:
    """The Python type of a sort key's values, as a cursor carries them."""
    if key.param.code == "_lastUpdated":
        return datetime
    if key.param.code == "_id":
        return str
    return type(_SENTINELS[key.param.type])


def _position(engine: Engine, cursor: str, kinds: list[type]) -> tuple[str, list[Any]]:
    """Direction and sort-key values of a cursor, checked against the query's sort keys.

    A cursor is client input: one that does not fit the query (edited, or from another query)
    is a 400, not a database error.
    """
    decoded = decode_cursor(engine, cursor)
    if len(decoded) != 2 or decoded[0] not in ("n", "p") or not isinstance(decoded[1], list) or len(decoded[1]) != len(kinds):
        raise InvalidRequest(f"Invalid paging cursor '{cursor}'", "_cursor")
    try:
        values = [_decode(v) for v in decoded[1]]
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise InvalidRequest(f"Invalid paging cursor '{cursor}'", "_cursor") from exc
    if not all(fits(v, kind) for v, kind in zip(values, kinds, strict=True)):
        raise InvalidRequest(f"Invalid paging cursor '{cursor}'", "_cursor")
    return decoded[0], values


def _keyset(keys: list[tuple[ColumnElement, bool]], values: list[Any], forward: bool) -> ColumnElement[bool]:
    """Rows strictly after (forward) or before the position ``values`` in the sort order."""
    alternatives = []
    for i, (column, descending) in enumerate(keys):
        after = (column < values[i]) if descending == forward else (column > values[i])
        alternatives.append(and_(*[keys[j][0] == values[j] for j in range(i)], after))
    return or_(*alternatives)


def match_condition(
    rows: FromClause, queries: dict[str | None, SearchQuery], compiler: Compiler, count: Counter | None = None,
) -> ColumnElement[bool]:
    """Live resources of ``rows`` matching the criteria, per type (``None``: any type, base
    parameters only). ``count``: how the lead of several plain criteria is picked by counting their
    index rows (``search.lead``); without it, by the kind of parameter alone."""
    alternatives = []
    for res_type, query in queries.items():
        criteria = _criteria(rows, query.criteria, compiler, count)
        alternatives.append(and_(_type_filter(rows, res_type, query.criteria), *criteria))
    return and_(rows.c.deleted.is_(False), or_(*alternatives))


def _type_filter(rows: FromClause, res_type: str | None, criteria: Sequence[Criterion]) -> ColumnElement[bool]:
    """Resources of ``res_type``. Where a plain criterion looks its resources up in an index table
    (whose rows carry the type), the type is compared as an expression (``res_type || ''``) that
    no index serves: SQLite without statistics otherwise walked every resource of the type through
    ``ix_resources_type_updated`` and checked each against the looked-up keys."""
    if res_type is None:
        return true()
    if any(is_plain(c) for c in criteria) and not any(_by_id(c) for c in criteria):
        return rows.c.res_type.concat("") == res_type
    return rows.c.res_type == res_type


def _by_id(criterion: Criterion) -> bool:
    return criterion.ref.param.code == "_id" and criterion.ref.modifier is None


def _criteria(
    rows: FromClause, criteria: Sequence[Criterion], compiler: Compiler, count: Counter | None = None,
) -> list[ColumnElement[bool]]:
    """Every criterion's condition; with several plain ones, only the lead's is a lookup and the
    others are probes of each of its resources (``search.compiler``'s docstring says why). With
    ``_id`` among the criteria, the row lookup by id leads and every plain criterion is a probe."""
    plain = [c for c in criteria if is_plain(c)]
    by_id = any(_by_id(c) for c in criteria)
    if len(plain) < 2 and not (plain and by_id):
        return [compiler.criterion(rows, c) for c in criteria]
    lead = None
    if not by_id:
        lead = pick_lead(plain, count) if count is not None else min(plain, key=lead_rank)
    return [compiler.criterion(rows, c) if c is lead or not is_plain(c) else compiler.probe(rows, c)
            for c in criteria]


def single_lookup(queries: dict[str | None, SearchQuery], compiler: Compiler) -> Select | None:
    """The index lookup of a search that is exactly one plain criterion on one type, in pk order,
    unconfined (``Patient?family=jen``): such a search can page and count on the index table alone.

    Sound because index rows exist only for live resources (a delete removes them) and carry the
    resource type; site confinement needs ``resources``, so confined callers take the general path.
    """
    if len(queries) != 1 or compiler.seen_by.confined:
        return None
    (res_type, query), = queries.items()
    if res_type is None or query.sort or len(query.criteria) != 1:
        return None
    return compiler.index_lookup(query.criteria[0])


def run_search(
    conn: Connection, rows_from: FromClause, query: SearchQuery, match: ColumnElement[bool] | Select, count: int,
    types: Sequence[str],
) -> tuple[list[Row], int | None, str | None, str | None]:
    """One page of matches, the total (unless ``_total=none``) and the next/previous cursors.

    ``types``: the types searched (none: a system search without ``_type``).

    ``match`` is a condition on ``rows_from`` (``match_condition``) or a single index lookup
    (``single_lookup``); with the lookup the page's keys are picked and counted in the index
    table, and only the page's own resources are read: 21 lookups into ``resources`` instead of
    one per match (a name prefix can match thousands).
    """
    r = rows_from
    keys = [(_sort_column(r, k, types), k.descending) for k in query.sort] + [(r.c.pk, False)]
    direction, position = "n", None
    if query.cursor:
        direction, position = _position(conn.engine, query.cursor, [_kind(k) for k in query.sort] + [int])
    forward = direction == "n"
    matched = match.subquery() if isinstance(match, Select) else None
    conditions: list[Any]
    if matched is None:
        conditions = [match]
    else:
        key = matched.c.resource_pk
        picked = select(key).distinct()
        if position is not None:
            picked = picked.where(key > position[0] if forward else key < position[0])
        conditions = [r.c.deleted.is_(False),
                      r.c.pk.in_(picked.order_by(key if forward else key.desc()).limit(count + 1))]
    page = select(r.c.pk, r.c.res_type, r.c.res_id, content_text(r),
                  *[column.label(f"k{i}") for i, (column, _) in enumerate(keys)]).where(*conditions)
    if position is not None:
        page = page.where(_keyset(keys, position, forward))
    order = [(c.desc() if d == forward else c.asc()) for c, d in keys]
    rows = list(conn.execute(page.order_by(*order).limit(count + 1)).all()) if count > 0 else []
    more = len(rows) > count
    rows = rows[:count]
    if not forward:
        rows.reverse()
    total = None
    if query.total != "none":
        if position is None and count > 0 and not more:
            total = len(rows)  # the first page holds every match: counting them again is a second query
        elif matched is not None:
            total = conn.execute(select(func.count(matched.c.resource_pk.distinct()))).scalar_one()
        else:
            total = conn.execute(select(func.count()).select_from(r).where(*conditions)).scalar_one()
    has_next = more if forward else True
    has_previous = (position is not None) if forward else more
    next_cursor = prev_cursor = None
    if rows and has_next:
        next_cursor = encode_cursor(conn.engine, ["n", [_encode(v) for v in _keys_of(rows[-1], len(keys))]])
    if rows and has_previous:
        prev_cursor = encode_cursor(conn.engine, ["p", [_encode(v) for v in _keys_of(rows[0], len(keys))]])
    return [Row(r.pk, r.res_type, r.res_id, r.text) for r in rows], total, next_cursor, prev_cursor


def _keys_of(row: Any, n: int) -> list[Any]:
    return [getattr(row, f"k{i}") for i in range(n)]


def _fetch(
    conn: Connection, caller: Access, condition: ColumnElement[bool], join_on: Callable[[FromClause], Any], extra: list,
) -> list[Row]:
    """Resources the caller may see and read, joined to the reference rows by ``join_on``."""
    r = caller.visibility.resources()
    pks = select(r.c.pk).select_from(search_reference.join(r, join_on(r))).where(r.c.deleted.is_(False), condition, *extra)
    found = caller.visibility.resources()
    rows = conn.execute(
        select(found.c.pk, found.c.res_type, found.c.res_id, content_text(found)).where(found.c.pk.in_(pks))
    ).all()
    return [Row(row.pk, row.res_type, row.res_id, row.text) for row in rows if caller.may_read(row.res_type)]


def _included(conn: Connection, caller: Access, items: list[Row], include: Include, base: str) -> list[Row]:
    """Targets of the references of ``items`` named by an ``_include`` (on this server)."""
    sources = [r.pk for r in items if include.source in ("*", r.res_type)]
    if not sources:
        return []
    link = search_reference
    extra = [local_reference(link, base)]
    if include.param != "*":
        extra.append(param_rows(link, include.source, include.param))
    if include.target:
        extra.append(link.c.target_type == include.target)
    return _fetch(conn, caller, link.c.resource_pk.in_(sources),
                  lambda r: and_(r.c.res_type == link.c.target_type, r.c.res_id == link.c.target_id), extra)


def _revincluded(conn: Connection, caller: Access, items: list[Row], include: Include, base: str) -> list[Row]:
    """Resources whose references named by a ``_revinclude`` point at ``items``."""
    link = search_reference
    by_type: dict[str, list[str]] = {}
    for item in items:
        if include.target in (None, item.res_type):
            by_type.setdefault(item.res_type, []).append(item.res_id)
    if not by_type:
        return []
    targets = or_(*[and_(link.c.target_type == t, link.c.target_id.in_(ids)) for t, ids in by_type.items()])
    extra = [local_reference(link, base)] + ([link.c.res_type == include.source] if include.source != "*" else [])
    if include.param != "*":
        extra.append(param_rows(link, include.source, include.param))
    return _fetch(conn, caller, targets, lambda r: r.c.pk == link.c.resource_pk, extra)


def resolve_includes(conn: Connection, caller: Access, matches: list[Row], query: SearchQuery, base: str) -> list[Row]:
    """``_include`` and ``_revinclude`` (``:iterate`` repeats on what was added), matches excluded."""
    seen = {(r.res_type, r.res_id) for r in matches}
    added: list[Row] = []
    frontier = matches
    for round_number in range(MAX_INCLUDE_ROUNDS):
        new: list[Row] = []
        for include in query.includes:
            if round_number == 0 or include.iterate:
                new += _included(conn, caller, frontier, include, base)
        for include in query.revincludes:
            if round_number == 0 or include.iterate:
                new += _revincluded(conn, caller, frontier, include, base)
        fresh = []
        for row in new:
            if (row.res_type, row.res_id) not in seen:
                seen.add((row.res_type, row.res_id))
                fresh.append(row)
        if not fresh:
            break
        added += fresh
        frontier = fresh
    return added


def search_bundle(
    store: Store,
    caller: Access,
    base: str,
    res_type: str | None,
    params: Sequence[tuple[str, str]],
    *,
    default_count: int,
    max_count: int,
    strict: bool = False,
    raw: bool = False,
) -> dict:
    """A searchset Bundle for ``[base]/[type]?params`` (``res_type`` None: system search with ``_type``).

    ``raw``: matched resources are ``orjson.Fragment``s of their stored JSON, for a caller that only
    serialises the Bundle with orjson (the HTTP answer); others get dicts."""
    queries = _queries(caller, res_type, params, strict)
    query = next(iter(queries.values()))
    count = min(query.count if query.count is not None else default_count, max_count)
    if query.summary == "count":
        count = 0
    with store.reading() as conn:
        seen_by = caller.visibility
        compiler = Compiler(base, seen_by, repository.terminology_lookup(conn, seen_by))
        searched = seen_by.resources()
        lookup = single_lookup(queries, compiler)
        if lookup is None:
            match: ColumnElement[bool] | Select = match_condition(
                searched, queries, compiler, index_counter(conn, compiler.index_lookup))
        else:
            match = lookup
        rows, total, next_cursor, prev_cursor = run_search(conn, searched, query, match, count, [t for t in queries if t])
        included = resolve_includes(conn, caller, rows, query, base) if rows and (query.includes or query.revincludes) else []
        rows, included = binary.readable(conn, caller, rows, Row.document), binary.readable(conn, caller, included, Row.document)
    path = f"{base}/{res_type}" if res_type else base
    kept = list(query.kept)
    if res_type is None and None not in queries:
        kept.append(("_type", ",".join(t for t in queries if t)))
    links = [{"relation": "self", "url": page_url(path, kept + ([("_cursor", query.cursor)] if query.cursor else []))}]
    for relation, cursor in (("next", next_cursor), ("previous", prev_cursor)):
        if cursor:
            page_params = [*_without_count(kept), ("_count", str(count)), ("_cursor", cursor)]
            links.append({"relation": relation, "url": page_url(path, page_params)})
    bundle: dict = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    entries = [_entry(base, r, "match", query, raw) for r in rows]
    entries += [_entry(base, r, "include", query, raw) for r in included]
    if entries:
        bundle["entry"] = entries
    return bundle


def _queries(
    caller: Access, res_type: str | None, params: Sequence[tuple[str, str]], strict: bool,
) -> dict[str | None, SearchQuery]:
    """One parsed query per resource type searched (type search: just that type).

    A system search without ``_type`` evaluates the parameters every resource has (``_id``,
    ``_lastUpdated``, ``_tag``, ``_profile``, ``_security``) over all types; others are unknown.
    """
    named = [t for k, v in params if k == "_type" for t in v.split(",") if t]
    queries: dict[str | None, SearchQuery]
    for searched in (res_type,) if res_type else (named or ["*"]):  # no type named: every type is searched
        caller.require(searched, "s")
    if res_type is not None:
        require_known_type(res_type)
        queries = {res_type: parse_query(res_type, params, strict=strict)}
    else:
        queries = _system_queries(params, strict)
    for query in queries.values():
        for other in sorted(criteria_types(query)):
            caller.require(other, "s")
    return queries


def _system_queries(params: Sequence[tuple[str, str]], strict: bool) -> dict[str | None, SearchQuery]:
    """A system search: one query per ``_type`` type, or one over the parameters of every type."""
    types = [t for k, v in params if k == "_type" for t in v.split(",") if t]
    for t in types:
        require_known_type(t)
    rest = [(k, v) for k, v in params if k != "_type"]
    if types:
        queries: dict[str | None, SearchQuery] = {t: parse_query(t, rest, strict=strict) for t in dict.fromkeys(types)}
        _require_common(queries)
        return queries
    return {None: parse_query(ANY_TYPE, rest, strict=strict)}


def _require_common(queries: dict[str | None, SearchQuery]) -> None:
    """Refuse a parameter that only some of the ``_type`` types know.

    Ignoring it for the others would return all their resources, applying it to some only would
    hide that; one that no type knows is simply unknown (ignored unless strict).
    """
    ignored: list[set[str]] = [set(q.ignored) for q in queries.values()]
    partial = sorted(set[str]().union(*ignored) - ignored[0].intersection(*ignored[1:]))
    if partial:
        lacking = [str(t) for t, q in queries.items() if partial[0] in q.ignored]
        raise InvalidRequest(
            f"Search parameter '{partial[0]}' does not apply to every type of _type (not to {', '.join(lacking)})",
            partial[0],
        )


def _without_count(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params if k != "_count"]


def _entry(base: str, row: Row, mode: str, query: SearchQuery, raw: bool) -> dict:
    if mode == "match" and (query.summary or query.elements):
        resource: Any = project(row.document(), query.summary, query.elements)
    elif raw:
        resource = orjson.Fragment(row.text)  # written into the response as stored
    else:
        resource = row.document()
    return {"fullUrl": f"{base}/{row.res_type}/{row.res_id}", "resource": resource, "search": {"mode": mode}}

