"""Every start-up hook of the app tolerates a cancelled query.

The app is started (its lifespan) against PostgreSQL with a 1 ms ``statement_timeout``, so that
many of the queries its hooks and background services send are cancelled. Which ones varies with
the machine's load, so besides, the first run of every distinct statement is cancelled as
PostgreSQL cancels it (``QueryCanceled``), except in the transactions of start-up work that leave
the limit by design (``SET LOCAL statement_timeout = 0``: that statement itself is not cancelled).
The hooks are taken
from the app itself (``app.router.on_startup``), so a new one is covered without a change here;
the settings switch on every optional service (SMART authentication: its signing secret, read or
made in the database, its client snapshot and rate limiter; the statistics keeper; the pull
scheduler; besides the job workers and the Subscription worker every app has).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from conftest import TEST_DEID_KEY
from fastapi import FastAPI
from sqlalchemy import Engine, event

from fhirfus.api.app import create_app
from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.settings import Settings
from fhirfus.store.repository import Store
from fhirfus.testing import scratch_postgres

#: Start-ups per test: whether a given query is cancelled by the real limit varies from one to the next.
STARTS = 2
EXEMPT = "SET LOCAL statement_timeout = 0"


def _cancel_first_runs(engine: Engine) -> None:
    """Cancel the first run of each distinct statement sent through ``engine`` (see the docstring)."""
    seen: set[str] = set()
    lock = threading.Lock()

    @event.listens_for(engine, "before_cursor_execute")
    def cancel(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith(EXEMPT):
            conn.info["exempt"] = True
            return
        with lock:
            first = statement not in seen
            seen.add(statement)
        if first and not conn.info.get("exempt"):
            raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def end(conn) -> None:  # type: ignore[no-untyped-def]
        conn.info.pop("exempt", None)


def _recorded(hook: Callable[[], Any], finished: list[int], index: int) -> Callable[[], Any]:
    """``hook`` as the lifespan calls it (awaited if it is a coroutine function), noting its end."""
    if inspect.iscoroutinefunction(hook):
        async def run_async() -> None:
            await hook()
            finished.append(index)
        return run_async

    def run() -> None:
        hook()
        finished.append(index)
    return run


async def _start_and_stop(app: FastAPI) -> list[str]:
    """Run the app's lifespan; every start-up hook must have run to its end, and every background
    thread it started must still be alive a second later. The names of those threads."""
    hooks = list(app.router.on_startup)
    finished: list[int] = []
    app.router.on_startup[:] = [_recorded(hook, finished, i) for i, hook in enumerate(hooks)]
    before = set(threading.enumerate())
    async with app.router.lifespan_context(app):
        assert finished == list(range(len(hooks))), f"hooks that ran to their end: {finished} of {len(hooks)}"
        services = [t for t in threading.enumerate() if t not in before and t.name.startswith("fhirfus")]
        await asyncio.sleep(1.0)  # their first rounds meet the limit too
        assert [t.name for t in services if not t.is_alive()] == []
    return [t.name for t in services]


def test_every_start_up_hook_completes_under_a_1_ms_statement_limit(tmp_path: Path) -> None:
    with scratch_postgres() as (url,):
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        settings = Settings(database_url=url, auth="smart", token_secret=None,
                            deid_key=TEST_DEID_KEY, statement_timeout_ms=1, analyze_after=100,
                            pull_schedule_seconds=3600, export_dir=str(tmp_path / "export"),
                            pull_dir=str(tmp_path / "pulls"))
        for _ in range(STARTS):
            store = Store(make_engine(url, statement_timeout_ms=1))
            _cancel_first_runs(store.engine)
            try:
                services = asyncio.run(_start_and_stop(create_app(settings, store)))
            finally:
                store.engine.dispose()
            assert services, "no background service started"
