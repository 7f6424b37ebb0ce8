"""Engine creation: one place that knows the differences between SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from psycopg.conninfo import make_conninfo
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(url: str, *, echo: bool = False, statement_timeout_ms: int = 0) -> Engine:
    """An engine for ``url`` with JSON handled by orjson and SQLite made safe for writers.

    SQLite: WAL (readers never block the writer), a busy timeout, and write transactions that
    start with ``BEGIN IMMEDIATE`` so two writers queue instead of dead-locking on lock upgrade.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, echo=echo)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    connect_args: dict[str, Any] = {}
    # No server-side prepared statements: after five executions PostgreSQL may switch a prepared
    # search to a value-blind generic plan, which turned a 0.3 ms patient+code+date search into
    # 1.9 s on 1,000,000 resources. Unnamed statements are planned with their actual values.
    connect_args["prepare_threshold"] = None
    # The fast row writers (``db/rows.py``) hand psycopg JSON already encoded as UTF-8; a connection
    # in the database's own encoding (LATIN1, say) would store those bytes as mojibake.
    connect_args["client_encoding"] = "utf8"
    engine = create_engine(
        url,
        echo=echo,
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
        pool_size=10,
        max_overflow=20,
        pool_recycle=1800,  # no pre-ping: it costs a round trip per request; stale links are recycled
        connect_args=connect_args,
    )
    if statement_timeout_ms:
        # the server's time limit per SQL statement: a runaway query is cancelled, not left running.
        # Set on each new connection after SQLAlchemy's own first-connect queries (type lookups in
        # the catalog), which are no request's and must not be cancelled by a small limit.
        # The SET runs outside a transaction: no COMMIT after it, which the new limit could cancel.
        @event.listens_for(engine, "connect")
        def _limit(dbapi_connection: Any, _record: Any) -> None:
            autocommit = dbapi_connection.autocommit
            dbapi_connection.autocommit = True
            try:
                with dbapi_connection.cursor() as cursor:
                    cursor.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")
            finally:
                dbapi_connection.autocommit = autocommit

    return engine


def libpq_address(engine: Engine, *, application_name: str, statement_timeout_ms: int = 0) -> str | None:
    """The libpq address of ``engine``'s database, for connections made outside SQLAlchemy (the
    async read pool, the ``LISTEN`` of subscriptions); None unless PostgreSQL.

    Built from the engine's URL as SQLAlchemy builds its own, so both reach the same database with
    the same options: UTF-8 (text columns are sent on as they arrive) and the engine's
    per-statement limit. Options in the URL's query win, as they do in SQLAlchemy."""
    url = engine.url
    if url.get_backend_name() != "postgresql":
        return None
    args = url.translate_connect_args(username="user", database="dbname")
    # a repeated key (several ``host=`` for failover) is one comma-separated libpq value
    options = {key: value if isinstance(value, str) else ",".join(value) for key, value in url.query.items()}
    options.setdefault("application_name", application_name)
    options["client_encoding"] = "UTF8"
    if statement_timeout_ms:  # after the URL's own ``options`` (a search_path, say), not instead of them
        limit = f"-c statement_timeout={int(statement_timeout_ms)}"
        options["options"] = f"{options['options']} {limit}" if options.get("options") else limit
    return make_conninfo(**({key: str(value) for key, value in args.items()} | options))


def _sqlite_engine(url: str, *, echo: bool) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        echo=echo,
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
        connect_args={"timeout": 30},
        pool_size=10,
        max_overflow=20,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get("fhirfus_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def upsert_insert(conn: Connection, table: Table) -> Any:
    """An INSERT of the connection's dialect, which has ``on_conflict_do_update``/``_do_nothing``."""
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)
