"""Search-index rows, written in the same transaction as the resource they describe.

Values come from ``fhirfus.fhir.extraction`` (the official SearchParameter expressions, plain
paths compiled to direct lookups); this module only turns them into rows and writes them with
one multi-row INSERT per index table.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, Table

from fhirfus.store import rows

from fhirfus.fhir.extraction import (
    CompositeValue,
    DateValue,
    IndexValues,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    extract_index_values,
    normalize_string,
)
from fhirfus.store.tables import (
    INDEX_TABLES,
    search_composite,
    search_date,
    search_number,
    search_quantity,
    search_reference,
    search_string,
    search_token,
    search_uri,
)

#: Longer values are cut: B-tree entries must stay small, and nobody searches by page-long text.
MAX_TEXT = 512


def _cut(value: str | None) -> str | None:
    return value[:MAX_TEXT] if value is not None and len(value) > MAX_TEXT else value


def _quantity_units(value: QuantityValue) -> list[tuple[str | None, str | None]]:
    """(system, code) rows of a Quantity: its coded unit, and its human unit as a code without system.

    The R4 spec's example ``value-quantity=5.4||mg`` matches "either the code or the stated human
    unit", so a unit that differs from the code is indexed too, without a system (a search naming
    a system still needs the coded unit).
    """
    coded = (value.system, value.code)
    if not value.unit or value.unit == value.code:
        return [coded]
    if value.system is None and value.code is None:
        return [(None, value.unit)]
    return [coded, (None, value.unit)]


_NO_COMPONENTS = dict.fromkeys(c.name for c in search_composite.c if c.name not in ("resource_pk", "res_type", "param"))


def _reference_key(value: ReferenceValue) -> str:
    """``Type/id`` of a relative reference; an absolute one (maybe another server's) stays whole."""
    if value.target_type and value.target_id and "://" not in value.url:
        return f"{value.target_type}/{value.target_id}"
    return value.url


def _composite_rows(base: dict, value: CompositeValue) -> list[dict]:
    """The rows of one composite value (a Quantity second component gives one per unit form);
    none for a shape that has no columns here (never among R4's composites)."""
    if not 2 <= len(value.components) <= 3:
        return []
    first, second, *rest = value.components
    row = {**base, "param": value.param, **_NO_COMPONENTS}
    if isinstance(first, TokenValue):
        row.update(system1=_cut(first.system), code1=_cut(first.code))
    elif isinstance(first, ReferenceValue):
        row.update(code1=_cut(_reference_key(first)))
    else:
        return []
    if rest:
        if not isinstance(rest[0], NumberValue | QuantityValue):
            return []
        row["number3"] = rest[0].value
    if isinstance(second, QuantityValue):
        return [{**row, "number2": second.value, "system2": _cut(system), "code2": _cut(code)}
                for system, code in _quantity_units(second)]
    if isinstance(second, TokenValue):
        row.update(system2=_cut(second.system), code2=_cut(second.code))
    elif isinstance(second, NumberValue):
        row["number2"] = second.value
    elif isinstance(second, DateValue):
        row.update(low2=second.low, high2=second.high)
    elif isinstance(second, StringValue):
        row["text2"] = _cut(second.normalized)
    elif isinstance(second, ReferenceValue):
        row["code2"] = _cut(_reference_key(second))
    elif isinstance(second, UriValue):
        row["code2"] = _cut(second.value)
    return [row]


def index_rows(pk: int, res_type: str, values: IndexValues) -> list[tuple[Table, list[dict]]]:
    """Rows for every index table (duplicates removed: the same value twice adds nothing)."""
    base = {"resource_pk": pk, "res_type": res_type}

    def unique(rows: Iterable[dict]) -> list[dict]:
        seen: dict[tuple, dict] = {}
        for row in rows:  # rows of one table are built with the same key order
            seen.setdefault(tuple(row.values()), row)
        return list(seen.values())

    return [
        (search_token, unique([
            *({**base, "param": v.param, "system": _cut(v.system), "code": _cut(v.code),
               "text": _cut(normalize_string(v.display_text)) if v.display_text else None}
              for v in values.tokens),
            *({**base, "param": f"{v.param}:identifier", "system": _cut(v.identifier_system),
               "code": _cut(v.identifier_value), "text": None}
              for v in values.references if v.identifier_value),
        ])),
        (search_string, unique(
            {**base, "param": v.param, "value": _cut(v.normalized), "exact": _cut(v.exact)} for v in values.strings
        )),
        (search_date, unique({**base, "param": v.param, "low": v.low, "high": v.high} for v in values.dates)),
        (search_reference, unique(
            {**base, "param": v.param, "target_type": v.target_type, "target_id": _cut(v.target_id),
             "url": _cut(v.url)}
            for v in values.references if v.url
        )),
        (search_number, unique({**base, "param": v.param, "value": v.value} for v in values.numbers)),
        (search_quantity, unique(
            {**base, "param": v.param, "value": v.value, "system": _cut(system), "code": _cut(code)}
            for v in values.quantities for system, code in _quantity_units(v)
        )),
        (search_uri, unique({**base, "param": v.param, "value": _cut(v.value)} for v in values.uris)),
        (search_composite, unique(row for v in values.composites for row in _composite_rows(base, v))),
    ]


def index_resource(
    conn: Connection, pk: int, res_type: str, content: dict, *, fresh: bool = False, previous: dict | None = None,
    also: list[rows.Batch] | None = None,
) -> None:
    """Replace the index rows of one resource (``fresh``: it has none yet, skip the deletes).

    ``also``: further rows (the history row) written in the same round trip.
    """
    deletes = [] if fresh else [(table, pk) for table in _tables_of(pk, res_type, previous)]
    rows.write(conn, [*(also or []), *index_rows(pk, res_type, extract_index_values(content))], deletes)


def index_many(conn: Connection, items: list[tuple[int, str, dict]], also: list[rows.Batch] | None = None) -> None:
    """Index freshly created resources: one multi-row INSERT per index table for all of them."""
    batches: dict[str, tuple[Table, list[dict]]] = {}
    for pk, res_type, content in items:
        for table, table_rows in index_rows(pk, res_type, extract_index_values(content)):
            batches.setdefault(table.name, (table, []))[1].extend(table_rows)
    rows.write(conn, [*(also or []), *batches.values()])


def _tables_of(pk: int, res_type: str | None, previous: dict | None) -> list[Table]:
    """Index tables that may hold rows of a resource: with its previous content at hand, only
    those its values go to (an update then deletes from two or three tables, not seven)."""
    if previous is None or res_type is None:
        return list(INDEX_TABLES)
    return [table for table, table_rows in index_rows(pk, res_type, extract_index_values(previous)) if table_rows]


def remove_resource(
    conn: Connection, pk: int, res_type: str | None = None, previous: dict | None = None,
    also: list[rows.Batch] | None = None,
) -> None:
    """Drop the index rows of a resource (before re-indexing, or when it is deleted)."""
    rows.write(conn, also or [], [(table, pk) for table in _tables_of(pk, res_type, previous)])
