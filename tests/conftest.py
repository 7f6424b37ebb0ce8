"""Fixtures: a real fhirfus server over HTTP, once on SQLite and once on PostgreSQL.

Each backend gets a fresh database (a temporary SQLite file; a PostgreSQL database with a random
name on ``FHIRFUS_TEST_POSTGRES_URL``, dropped afterwards), migrated with Alembic, and a uvicorn
server on a free loopback port. Tests talk to it with httpx or a FHIR client library.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, func, select

from fhirfus.api.app import create_app
from fhirfus.api.limits import FhirHttpProtocol
from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.db.tables import resource_history, resources
from fhirfus.settings import Settings, test_postgres_url
from fhirfus.store.repository import Store
from fhirfus.testing import Receiver, free_port, scratch_postgres

POSTGRES_URL = test_postgres_url()
BACKENDS = ("sqlite", "postgresql")
#: The de-identification key the test servers run with.
TEST_DEID_KEY = "test-deid-key-0123456789abcdef"


@dataclass
class Database:
    backend: str
    url: str
    engine: Engine

    def counts(self) -> tuple[int, int]:
        """(current rows, history rows) of everything but AuditEvents: proof that a rejected request
        wrote nothing (audit records are shipped to the database asynchronously, so earlier tests'
        read audits may land at any moment; refused writes are audited too)."""
        with self.engine.connect() as conn:
            current = conn.execute(select(func.count()).select_from(resources)
                                   .where(resources.c.res_type != "AuditEvent")).scalar_one()
            versions = conn.execute(select(func.count()).select_from(resource_history)
                                    .where(resource_history.c.res_type != "AuditEvent")).scalar_one()
        return current, versions


def _postgres_database() -> Iterator[str]:
    with scratch_postgres() as (url,):
        yield url


def database_url_for(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "fhirfus.db"
        yield f"sqlite:///{path}"
    else:
        yield from _postgres_database()


@pytest.fixture(params=BACKENDS)
def fresh_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """An unmigrated database per test (for migration tests)."""
    generator = database_url_for(request.param, tmp_path_factory)
    url = next(generator)
    engine = make_engine(url)
    try:
        yield Database(request.param, url, engine)
    finally:
        engine.dispose()
        next(generator, None)


@pytest.fixture(scope="session", params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A migrated database shared by the tests of one backend."""
    generator = database_url_for(request.param, tmp_path_factory)
    url = next(generator)
    engine = make_engine(url)
    migrate.upgrade(engine)
    try:
        yield Database(request.param, url, engine)
    finally:
        engine.dispose()
        next(generator, None)


@dataclass
class Server:
    base: str
    database: Database

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30, **kwargs)  # type: ignore[arg-type]


def run_server(settings: Settings, store: Store) -> tuple[uvicorn.Server, threading.Thread, int]:
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, store), host="127.0.0.1", port=port, log_level="warning", lifespan="on",
        access_log=False, http=FhirHttpProtocol,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    return server, thread, port


@contextmanager
def serving(settings: Settings, store: Store) -> Iterator[tuple[str, Any]]:
    """A server of one test's own: (root URL, the FastAPI app)."""
    uv, thread, port = run_server(settings, store)
    try:
        yield f"http://127.0.0.1:{port}", uv.config.app
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def server(database: Database) -> Iterator[Server]:
    """fhirfus served over HTTP on the backend of ``database``."""
    settings = Settings(database_url=database.url, max_body_bytes=1024 * 1024, default_page_size=20, auth="off",
                        deid_key=TEST_DEID_KEY)
    uv, thread, port = run_server(settings, Store(database.engine))
    try:
        yield Server(f"http://127.0.0.1:{port}/fhir", database)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


@pytest.fixture
def unique() -> str:
    """A value no other test uses: keeps tests on a shared server independent."""
    return uuid.uuid4().hex[:12]


@dataclass
class SecureServer:
    """fhirfus with SMART authentication on (FHIRFUS_AUTH=smart), over the same database."""

    base: str
    database: Database
    app: object

    @property
    def root(self) -> str:
        return self.base.removesuffix("/fhir")


@pytest.fixture(scope="session")
def secure_server(database: Database) -> Iterator[SecureServer]:
    settings = Settings(database_url=database.url, auth="smart", token_secret="test-secret-" + uuid.uuid4().hex,
                        deid_key=TEST_DEID_KEY,
                        default_page_size=20, rate_limit_per_minute=100_000, token_rate_limit_per_minute=100_000,
                        token_rate_limit_per_address=100_000)
    uv, thread, port = run_server(settings, Store(database.engine))
    try:
        yield SecureServer(f"http://127.0.0.1:{port}/fhir", database, uv.config.app)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A REST-hook endpoint that records every notification it is sent."""
    hook = Receiver().start()
    try:
        yield hook
    finally:
        hook.stop()
