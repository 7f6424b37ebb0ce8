"""Asynchronous PostgreSQL connections for the reads that run on the event loop.

A read by id is one indexed lookup: what it costs in the server is the driver around it. So the
pool speaks to libpq (``psycopg.pq``) itself: each statement is prepared once per connection, sent
with its parameters as text, answered in the binary format (the stored JSON's bytes as they come,
numbers and instants without a text parse) and awaited on the event loop, without psycopg's
cursor, adapters and generator machinery, which cost more CPU than the lookup. psycopg still opens
and closes the connections (its connection string handling, its errors).

The pool is deliberately small and plain: autocommit connections (each statement sees one
consistent snapshot, as ``Store.reading`` does on PostgreSQL), opened on demand up to ``size`` per
event loop, one left mid-statement (an error, a cancelled request) or broken thrown away.
Connections and the semaphore belong to the event loop that opened them (a test client runs its
own loop), so they are kept per loop.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import pq
from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import Select

from fhirfus.db.engine import libpq_address

#: How the pool's connections show in ``pg_stat_activity`` (unless the URL names one).
APPLICATION_NAME = "fhirfus-reads"

_names = itertools.count(1)


@dataclass(frozen=True)
class Statement:
    """A SELECT compiled once into PostgreSQL's ``$n`` form: the name it is prepared under on each
    connection, its SQL, the order of its parameters and their compiled values (the ones a caller
    does not pass, such as a visibility's sites)."""

    name: bytes
    sql: bytes
    order: tuple[str, ...]
    defaults: Mapping[str, Any]

    @classmethod
    def of(cls, query: Select[Any]) -> Statement:
        compiled = query.compile(dialect=postgresql.asyncpg.dialect(), compile_kwargs={"render_postcompile": True})
        return cls(f"fhirfus_read_{next(_names)}".encode(), str(compiled).encode(),
                   tuple(compiled.positiontup or ()), dict(compiled.params))

    def parameters(self, values: Mapping[str, Any]) -> list[bytes | None]:
        return [_text_parameter(values[key] if key in values else self.defaults[key]) for key in self.order]


def _text_parameter(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    return str(value).encode()


_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _instant(data: bytes) -> datetime:
    return _EPOCH + timedelta(microseconds=int.from_bytes(data, "big", signed=True))


def _integer(data: bytes) -> int:
    return int.from_bytes(data, "big", signed=True)


#: Decoders of the binary format by type OID; text types come as their UTF-8 bytes, decoded by the
#: caller (the stored JSON stays bytes).
_DECODERS: dict[int, Callable[[bytes], Any]] = {
    16: lambda data: data == b"\x01",  # bool
    20: _integer, 21: _integer, 23: _integer,  # int8, int2, int4
    1184: _instant,  # timestamptz
}


class _Connection:
    """One autocommit connection and the statements prepared on it."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self.conn = conn
        self.pgconn = conn.pgconn
        self.pgconn.nonblocking = 1
        self.prepared: set[bytes] = set()

    @property
    def usable(self) -> bool:
        return not self.conn.closed and self.pgconn.status == pq.ConnStatus.OK \
            and self.pgconn.transaction_status == pq.TransactionStatus.IDLE

    async def fetch_one(self, statement: Statement, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        pgconn = self.pgconn
        if statement.name not in self.prepared:
            pgconn.send_prepare(statement.name, statement.sql)
            _check(await self._result(), pq.ExecStatus.COMMAND_OK)
            self.prepared.add(statement.name)
        pgconn.send_query_prepared(statement.name, statement.parameters(values), result_format=1)
        result = _check(await self._result(), pq.ExecStatus.TUPLES_OK)
        if not result.ntuples:
            return None
        row = []
        for column in range(result.nfields):
            data = result.get_value(0, column)
            decode = _DECODERS.get(result.ftype(column))
            row.append(data if data is None or decode is None else decode(data))
        return tuple(row)

    async def _result(self) -> pq.abc.PGresult:
        """The one result of the query just sent (flushed and awaited without blocking the loop)."""
        pgconn, loop = self.pgconn, asyncio.get_running_loop()
        while pgconn.flush():
            await _ready(loop, pgconn.socket, writing=True)
        pgconn.consume_input()
        while pgconn.is_busy():
            await _ready(loop, pgconn.socket, writing=False)
            pgconn.consume_input()
        result = pgconn.get_result()
        while pgconn.get_result() is not None:  # the end of this query's results
            pass
        if result is None:
            raise psycopg.OperationalError("the server sent no result")
        return result


def _check(result: pq.abc.PGresult, expected: pq.ExecStatus) -> pq.abc.PGresult:
    if result.status != expected:
        raise psycopg.errors.error_from_result(result, encoding="utf-8")
    return result


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, writing: bool) -> None:
    """Wait until ``fd`` can be read (or written)."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if writing else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if writing else loop.remove_reader)(fd)


@dataclass
class _LoopPool:
    semaphore: asyncio.Semaphore
    idle: list[_Connection] = field(default_factory=list)


class AsyncReadPool:
    """Autocommit libpq connections to the database of a PostgreSQL engine."""

    def __init__(self, conninfo: str, size: int = 10) -> None:
        self.conninfo = conninfo
        self.size = size
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = weakref.WeakKeyDictionary()
        self._last: tuple[asyncio.AbstractEventLoop, _LoopPool] | None = None  # a server runs one loop

    @classmethod
    def for_engine(cls, engine: Engine, *, statement_timeout_ms: int = 0, size: int = 10) -> AsyncReadPool | None:
        """A pool to ``engine``'s database, None unless it is PostgreSQL (SQLite reads stay on threads)."""
        address = libpq_address(engine, application_name=APPLICATION_NAME, statement_timeout_ms=statement_timeout_ms)
        return None if address is None else cls(address, size)

    def _pool(self) -> _LoopPool:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:
            return last[1]
        pool = self._loops.get(loop)
        if pool is None:
            pool = self._loops[loop] = _LoopPool(asyncio.Semaphore(self.size))
        self._last = (loop, pool)
        return pool

    async def fetch_one(self, statement: Statement, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of ``statement`` with ``values`` (binary columns decoded, text as bytes), None
        for no row; on a pooled connection that goes back to the pool unless it broke."""
        pool = self._pool()
        async with pool.semaphore:
            conn = pool.idle.pop() if pool.idle else None
            if conn is None or not conn.usable:
                conn = _Connection(await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True))
            done = False
            try:
                row = await conn.fetch_one(statement, values)
                done = True
                return row
            except psycopg.Error:
                done = conn.usable  # a statement error (a timeout) leaves the connection as it was
                raise
            finally:  # a connection left mid-statement (a cancelled request) is replaced
                if done and conn.usable:
                    pool.idle.append(conn)
                else:
                    await conn.conn.close()

    async def discard_idle(self) -> None:
        """Close the running loop's idle connections (after one of them was found closed by the server)."""
        pool = self._pool()
        idle, pool.idle = pool.idle, []
        for conn in idle:
            await conn.conn.close()

    async def close(self) -> None:
        """Close the idle connections of the running loop (at shutdown)."""
        loop = asyncio.get_running_loop()
        pool = self._loops.pop(loop, None)
        if self._last is not None and self._last[0] is loop:
            self._last = None
        for conn in pool.idle if pool else ():
            await conn.conn.close()
