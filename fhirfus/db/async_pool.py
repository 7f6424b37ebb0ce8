"""Asynchronous PostgreSQL connections for the reads that run on the event loop.

A read by id is one indexed lookup: run on the event loop with psycopg's async driver it needs no
thread-pool hop, which costs more CPU than the lookup itself. The pool is deliberately small and
plain: autocommit connections (each statement sees one consistent snapshot, as ``Store.reading``
does on PostgreSQL), opened on demand up to ``size`` per event loop, a broken one thrown away.
Connections and the semaphore belong to the event loop that opened them (a test client runs its
own loop), so they are kept per loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy import Engine

#: How the pool's connections show in ``pg_stat_activity`` (unless the URL names one).
APPLICATION_NAME = "fhirfus-reads"


@dataclass
class _LoopPool:
    semaphore: asyncio.Semaphore
    idle: list[psycopg.AsyncConnection] = field(default_factory=list)


class AsyncReadPool:
    """Autocommit psycopg ``AsyncConnection``s to the database of a PostgreSQL engine."""

    def __init__(self, conninfo: str, size: int = 10) -> None:
        self.conninfo = conninfo
        self.size = size
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = weakref.WeakKeyDictionary()
        self._last: tuple[asyncio.AbstractEventLoop, _LoopPool] | None = None  # a server runs one loop

    @classmethod
    def for_engine(cls, engine: Engine, *, statement_timeout_ms: int = 0, size: int = 10) -> AsyncReadPool | None:
        """A pool to ``engine``'s database, None unless it is PostgreSQL (SQLite reads stay on threads)."""
        url = engine.url
        if url.get_backend_name() != "postgresql":
            return None
        args = url.translate_connect_args(username="user", database="dbname")
        options = {key: value for key, value in url.query.items() if isinstance(value, str)}
        options.setdefault("application_name", APPLICATION_NAME)
        if statement_timeout_ms:  # the same per-statement limit as the engine's connections
            options["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
        params = {key: str(value) for key, value in args.items()} | options  # the query wins, as in SQLAlchemy
        return cls(make_conninfo(**params), size)

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

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A connection for one statement or a few; back to the pool unless it broke."""
        pool = self._pool()
        async with pool.semaphore:
            conn = pool.idle.pop() if pool.idle else None
            if conn is None or conn.closed:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True, prepare_threshold=None)
            try:
                yield conn
            finally:  # a connection left mid-statement (an error, a cancelled request) is replaced
                if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE and not conn.closed:
                    pool.idle.append(conn)
                else:
                    await conn.close()

    async def discard_idle(self) -> None:
        """Close the running loop's idle connections (after one of them was found closed by the server)."""
        pool = self._pool()
        idle, pool.idle = pool.idle, []
        for conn in idle:
            await conn.close()

    async def close(self) -> None:
        """Close the idle connections of the running loop (at shutdown)."""
        loop = asyncio.get_running_loop()
        pool = self._loops.pop(loop, None)
        if self._last is not None and self._last[0] is loop:
            self._last = None
        for conn in pool.idle if pool else ():
            await conn.close()
