"""Writing many small rows fast: few network round trips, no per-row statements on PostgreSQL.

A create touches the history table and several index tables. Through SQLAlchemy that is one
round trip per table; on PostgreSQL the rows go through psycopg instead:

- a *pipeline* for the few rows of a single-resource write (its deletes and one statement
  inserting the rows of every table, sent together and acknowledged together: one round trip);
- ``COPY … FROM STDIN`` for the thousands of rows of a bulk create (Bundles, ``fhirfus load``):
  no statement per row to parse and bind; measured 2–3× faster than a pipelined executemany.

A write transaction's small reads that need not come first (whether the stored Subscriptions
changed) ride along in that pipeline (``ride_along``) instead of paying a round trip of their own.

SQLite runs in-process and needs no such trick.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache, lru_cache
from operator import itemgetter
from typing import Any

import orjson
import psycopg
from sqlalchemy import JSON, Connection, Table, delete, insert, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, IntegrityError

#: Rows of one table: dicts (by column name), or tuples holding every column in the table's order
#: (the index rows, built that way to skip a dict per row on the bulk path).
Batch = tuple[Table, list[dict] | list[tuple]]

#: From this many rows in one table, COPY beats a place in the pipelined multi-row INSERT. COPY
#: costs two more round trips per table; a row of the INSERT only its values' dump. Tables with fewer
#: rows of a write go together in the one statement of its pipelined round trip, so a single
#: resource's write (a few rows per table) needs no COPY.
COPY_FROM = 64

#: Rows keyed by a serial go in by COPY from this many: COPY first draws the keys from the
#: sequence, a round trip that a small ``INSERT … RETURNING`` does not need.
KEYED_COPY_FROM = 64


#: ``Connection.info`` keys: the reads waiting to ride along (name → SQL) and the first rows they
#: returned (name → row). ``forget_riders`` clears both when the transaction ends.
RIDERS = "fhirfus.riders"
RIDDEN = "fhirfus.ridden"


def ride_along(conn: Connection, name: str, sql: str, params: dict[str, Any] | None = None) -> None:
    """Send the read ``sql`` (psycopg's, with ``params``) with the next pipelined round trip of
    ``write`` on ``conn`` (PostgreSQL), its rows then ``ridden(conn, name)``: a write transaction
    pays that trip anyway. Without one (SQLite, or a write of COPYs only) the read never runs: the
    caller runs it itself when ``ridden`` answers None."""
    conn.info.setdefault(RIDERS, {})[name] = (sql, params)


def ridden(conn: Connection, name: str) -> list[tuple] | None:
    """The rows of the read queued under ``name`` (once), or None if it did not ride yet."""
    return conn.info.get(RIDDEN, {}).pop(name, None)


def forget_riders(conn: Connection) -> None:
    conn.info.pop(RIDERS, None)
    conn.info.pop(RIDDEN, None)


#: ``prepare_threshold`` while a write runs: a statement is prepared on its connection from its
#: second execution there (a single resource's write repeats the same few; a Bundle's shapes seldom).
WRITES_PREPARED_AFTER = 1


@contextmanager
def prepared_writes(raw: psycopg.Connection) -> Iterator[None]:
    """Have psycopg prepare the write statements that recur on this connection, which
    ``db/engine.py`` otherwise turns off for the searches' sake: PostgreSQL then stops parsing a
    create's same statements again for every create. An INSERT … VALUES or a DELETE by key has no
    plan to get wrong, unlike a search; the reads riding along are sent with ``prepare=False``."""
    before = raw.prepare_threshold
    raw.prepare_threshold = WRITES_PREPARED_AFTER
    try:
        yield
    finally:
        raw.prepare_threshold = before


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


@lru_cache(maxsize=1024)
def _insert_sql(shape: tuple[tuple[str, tuple[str, ...], int], ...]) -> str:
    """One statement inserting into each (table, columns, row count) of ``shape``: a multi-row
    INSERT, and for several tables data-modifying CTEs before the last one. One statement costs
    psycopg one send and one parse on the server where a row each cost both. Its placeholders are
    PostgreSQL's own (``$1``), for a ``psycopg.RawCursor``: psycopg converts ``%s`` by a regular
    expression on every execution of a statement with more than 50 parameters (it caches fewer)."""
    numbers = itertools.count(1)
    inserts = [f"INSERT INTO {name} ({', '.join(columns)}) VALUES "
               + ", ".join("(" + ", ".join(f"${next(numbers)}" for _ in columns) + ")" for _ in range(count))
               for name, columns, count in shape]
    if len(inserts) == 1:
        return inserts[0]
    return "WITH " + ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(inserts[:-1])) + " " + inserts[-1]


@cache
def _copy_sql(table: Table, columns: tuple[str, ...]) -> str:
    binary = " (FORMAT BINARY)" if _binary_types(table, columns) else ""
    return f"COPY {table.name} ({', '.join(columns)}) FROM STDIN{binary}"


@cache
def _binary_types(table: Table, columns: tuple[str, ...]) -> tuple[str, ...] | None:
    """PostgreSQL type names for a binary COPY of these columns, or None for a text COPY.

    Binary where a column holds timestamps: psycopg renders a timezone-aware datetime as text in
    2.6 µs of CPU and as binary in 0.3 (a date index row, a resource's ``last_updated``). Text
    elsewhere: a Decimal costs more in binary (0.9 against 0.6 µs), text and integers the same.
    """
    names = tuple(re.sub(r"\(.*\)", "", table.c[c].type.compile(dialect=postgresql.dialect())).lower() for c in columns)
    return names if "timestamp with time zone" in names else None


@cache
def _picker(columns: tuple[str, ...]) -> Callable[[dict], Sequence[Any]]:
    """A dict row's values in ``columns`` order."""
    return itemgetter(*columns) if len(columns) > 1 else (lambda row: (row[columns[0]],))


@cache
def _row_values(table: Table, columns: tuple[str, ...]) -> Callable[[dict], Sequence[Any]]:
    """A row's values in ``columns`` order, JSON columns wrapped for psycopg (index rows have none,
    and skip the per-value check: it was a tenth of a bulk create's CPU)."""
    pick = _picker(columns)
    documents = [i for i, name in enumerate(columns) if isinstance(table.c[name].type, JSON)]
    if not documents:
        return pick

    def values(row: dict) -> Sequence[Any]:
        out = list(pick(row))
        for i in documents:
            out[i] = _adapt(out[i])
        return out

    return values


def _adapt(value: Any) -> Any:
    if isinstance(value, dict | list):
        from psycopg.types.json import Jsonb

        return Jsonb(value, dumps=_json)
    return value


@cache
def _psycopg_sql(statement: Any, columns: tuple[str, ...]) -> str:
    return str(statement.compile(dialect=postgresql.psycopg.dialect(), column_keys=list(columns)))


def insert_returning(conn: Connection, statement: Any, values: dict[str, Any]) -> Any:
    """The first column of the first row an ``INSERT … RETURNING`` (built once, the row as
    ``values``) returns, or None. On PostgreSQL straight through psycopg, the SQL compiled once:
    a create's one statement before its rows, not worth a SQLAlchemy execution (whose setup cost
    more CPU than the statement). Errors come as SQLAlchemy's, as from ``Connection.execute``."""
    if conn.dialect.name != "postgresql":
        return conn.execute(statement, values).scalar()
    raw = conn.connection.dbapi_connection
    assert isinstance(raw, psycopg.Connection)
    sql = _psycopg_sql(statement, tuple(values))
    params = {name: _adapt(value) for name, value in values.items()}
    with raw.cursor() as cursor, prepared_writes(raw):
        try:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        except psycopg.Error as exc:
            if conn.dialect.is_disconnect(exc, raw, cursor):
                conn.invalidate(exc)
            raise DBAPIError.instance(sql, params, exc, psycopg.Error, dialect=conn.dialect) from exc
    return None if row is None else row[0]


def insert_with_keys(conn: Connection, table: Table, rows: list[dict]) -> list[int]:
    """Insert ``rows`` into a table keyed by a serial ``pk``; returns the new keys in row order.

    On PostgreSQL a large batch draws its keys from the sequence first and then goes in by COPY
    (SQLAlchemy's multi-row ``INSERT … RETURNING`` spends most of its time building and parsing
    one huge statement). A duplicate raises SQLAlchemy's ``IntegrityError`` either way.
    """
    if conn.dialect.name != "postgresql" or len(rows) < KEYED_COPY_FROM:
        result = conn.execute(insert(table).returning(table.c.pk, sort_by_parameter_order=True), rows)
        return [row.pk for row in result]
    keys = list(conn.execute(
        text("SELECT nextval(pg_get_serial_sequence(:table, 'pk')) FROM generate_series(1, :n)"),
        {"table": table.name, "n": len(rows)},
    ).scalars())
    write(conn, [(table, [{"pk": key, **row} for key, row in zip(keys, rows, strict=True)])])
    return keys


@cache
def _all_columns(table: Table) -> tuple[str, ...]:
    return tuple(column.name for column in table.c)


def _row_form(table: Table, rows: list[dict] | list[tuple]) -> tuple[tuple[str, ...], Callable[[Any], Sequence[Any]]]:
    """The columns a batch fills and how one of its rows becomes the values in their order."""
    if isinstance(rows[0], dict):
        columns = tuple(rows[0])
        return columns, _row_values(table, columns)
    return _all_columns(table), tuple


def write(conn: Connection, inserts: Iterable[Batch], deletes: Sequence[tuple[Table, int]] = ()) -> None:
    """Run ``deletes`` (table, resource_pk), then the multi-row ``inserts``, in the current transaction."""
    inserts = [(table, rows) for table, rows in inserts if rows]
    if conn.dialect.name == "sqlite":
        _sqlite_write(conn, inserts, deletes)
        return
    if conn.dialect.name != "postgresql":
        for table, pk in deletes:
            conn.execute(delete(table).where(table.c.resource_pk == pk))
        for table, rows in inserts:
            if not isinstance(rows[0], dict):
                names = _all_columns(table)
                rows = [dict(zip(names, row, strict=True)) for row in rows]
            conn.execute(insert(table), rows)
        return
    raw = conn.connection.dbapi_connection
    assert isinstance(raw, psycopg.Connection)
    small = [(table, rows) for table, rows in inserts if len(rows) < COPY_FROM]
    large = [(table, rows) for table, rows in inserts if len(rows) >= COPY_FROM]
    riders: dict[str, tuple[str, Any]] = conn.info.pop(RIDERS, None) or {}
    with raw.cursor() as cursor:
        if deletes or small or riders:
            readers = [(name, raw.cursor()) for name in riders]
            inserting = psycopg.RawCursor(raw)
            with inserting, raw.pipeline(), prepared_writes(raw):
                for table, pk in deletes:
                    cursor.execute(f"DELETE FROM {table.name} WHERE resource_pk = %s", (pk,))
                if small:
                    shape, params = [], []
                    for table, rows in small:
                        columns, values = _row_form(table, rows)
                        shape.append((table.name, columns, len(rows)))
                        params += [value for row in rows for value in values(row)]
                    inserting.execute(_insert_sql(tuple(shape)), params)
                for name, reader in readers:
                    reader.execute(*riders[name], prepare=False)
            ridden_rows = conn.info.setdefault(RIDDEN, {})
            for name, reader in readers:
                ridden_rows[name] = reader.fetchall()
                reader.close()
        for table, rows in large:
            columns, values = _row_form(table, rows)
            try:
                with cursor.copy(_copy_sql(table, columns)) as copy:
                    if binary := _binary_types(table, columns):
                        copy.set_types(binary)
                    for row in rows:
                        copy.write_row(values(row))
            except psycopg.IntegrityError as exc:
                raise IntegrityError(_copy_sql(table, columns), None, exc) from exc


def _sqlite_write(conn: Connection, inserts: list[Batch], deletes: Sequence[tuple[Table, int]]) -> None:
    """``write`` on SQLite: each table's rows by one ``executemany`` on the driver's cursor, the SQL
    built once per (table, columns) and each value converted by its column type's own bind
    processor (what SQLAlchemy would store), without an SQLAlchemy execution per table (whose
    setup cost more CPU than SQLite's insert). Errors come as SQLAlchemy's."""
    raw = conn.connection.dbapi_connection
    assert isinstance(raw, sqlite3.Connection)
    cursor = raw.cursor()
    sql, params = "", None
    try:
        for table, pk in deletes:
            sql, params = f"DELETE FROM {table.name} WHERE resource_pk = ?", (pk,)
            cursor.execute(sql, params)
        for table, rows in inserts:
            columns = tuple(rows[0]) if isinstance(rows[0], dict) else _all_columns(table)
            pick = _picker(columns) if isinstance(rows[0], dict) else tuple
            sql, convert = _sqlite_insert(conn.dialect, table, columns)
            params = [convert(pick(row)) for row in rows]
            cursor.executemany(sql, params)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, params, exc, sqlite3.Error, dialect=conn.dialect) from exc
    finally:
        cursor.close()


@cache
def _sqlite_insert(dialect: Any, table: Table, columns: tuple[str, ...]) -> tuple[str, Callable[[Sequence[Any]], tuple]]:
    """The INSERT of ``columns`` into ``table`` and how a row's values become what SQLite stores."""
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
    processors = [table.c[name].type._cached_bind_processor(dialect) for name in columns]
    if not any(processors):
        return sql, tuple
    steps = [(i, p) for i, p in enumerate(processors) if p is not None]

    def convert(values: Sequence[Any]) -> tuple:
        out = list(values)
        for i, process in steps:
            out[i] = process(out[i])
        return tuple(out)

    return sql, convert
