"""Search-index rows, written in the same transaction as the resource they describe.

Values come from ``fhirfus.search.extraction`` (the official SearchParameter expressions, plain
paths compiled to direct lookups); this module only turns them into rows and writes them with
one COPY (or multi-row INSERT) per index table.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table

from fhirfus.db import rows
from fhirfus.db.tables import (
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
from fhirfus.search.extraction import (
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
from fhirfus.search.registry import reference_subsets

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


def _reference_key(value: ReferenceValue) -> str:
    """``Type/id`` of a relative reference; an absolute one (maybe another server's) stays whole."""
    if value.target_type and value.target_id and "://" not in value.url:
        return f"{value.target_type}/{value.target_id}"
    return value.url


def _composite_rows(pk: int, res_type: str, value: CompositeValue) -> list[tuple]:
    """The rows of one composite value (a Quantity second component gives one per unit form);
    none for a shape that has no columns here (never among R4's composites).

    Columns: system1, code1, system2, code2, number2, low2, high2, text2, number3.
    """
    if not 2 <= len(value.components) <= 3:
        return []
    first, second, *rest = value.components
    if isinstance(first, TokenValue):
        head = (pk, res_type, value.param, _cut(first.system), _cut(first.code))
    elif isinstance(first, ReferenceValue):
        head = (pk, res_type, value.param, None, _cut(_reference_key(first)))
    else:
        return []
    number3 = None
    if rest:
        if not isinstance(rest[0], NumberValue | QuantityValue):
            return []
        number3 = rest[0].value
    if isinstance(second, QuantityValue):
        return [(*head, _cut(system), _cut(code), second.value, None, None, None, number3)
                for system, code in _quantity_units(second)]
    tail: tuple[Any, ...]
    if isinstance(second, TokenValue):
        tail = (_cut(second.system), _cut(second.code), None, None, None, None)
    elif isinstance(second, NumberValue):
        tail = (None, None, second.value, None, None, None)
    elif isinstance(second, DateValue):
        tail = (None, None, None, second.low, second.high, None)
    elif isinstance(second, StringValue):
        tail = (None, None, None, None, None, _cut(second.normalized))
    elif isinstance(second, ReferenceValue):
        tail = (None, _cut(_reference_key(second)), None, None, None, None)
    elif isinstance(second, UriValue):
        tail = (None, _cut(second.value), None, None, None, None)
    else:
        tail = (None, None, None, None, None, None)
    return [(*head, *tail, number3)]


def _unique(rows: list[tuple]) -> list[tuple]:
    """The same value twice adds nothing (a union may select one element twice)."""
    return list(dict.fromkeys(rows)) if len(rows) > 1 else rows


def index_rows(pk: int, res_type: str, values: IndexValues) -> list[rows.Batch]:
    """Rows for every index table, as tuples in the table's column order (``tables._index_table``:
    resource_pk, res_type, param, then the value columns): no dict per row to build and take apart
    again for COPY, where a bulk create spends its CPU."""
    held = reference_subsets(res_type)  # ``patient``: its rows are ``subject``'s of type Patient
    return [
        (search_token, _unique([
            *((pk, res_type, v.param, _cut(v.system), _cut(v.code),
               _cut(normalize_string(v.display_text)) if v.display_text else None)
              for v in values.tokens),
            *((pk, res_type, f"{v.param}:identifier", _cut(v.identifier_system), _cut(v.identifier_value), None)
              for v in values.references if v.identifier_value),
        ])),
        (search_string, _unique([(pk, res_type, v.param, _cut(v.normalized), _cut(v.exact)) for v in values.strings])),
        (search_date, _unique([(pk, res_type, v.param, v.low, v.high) for v in values.dates])),
        (search_reference, _unique([
            (pk, res_type, v.param, v.target_type, _cut(v.target_id), _cut(v.url)) for v in values.references
            if v.url and v.param not in held
        ])),
        (search_number, _unique([(pk, res_type, v.param, v.value) for v in values.numbers])),
        (search_quantity, _unique([
            (pk, res_type, v.param, v.value, _cut(system), _cut(code))
            for v in values.quantities for system, code in _quantity_units(v)
        ])),
        (search_uri, _unique([(pk, res_type, v.param, _cut(v.value)) for v in values.uris])),
        (search_composite, _unique([row for v in values.composites for row in _composite_rows(pk, res_type, v)])),
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
    batches: dict[str, tuple[Table, list[Any]]] = {}
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
