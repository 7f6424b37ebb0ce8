"""What the tests and the benchmarks both need: throw-away PostgreSQL databases and free ports.

Not used by the server. A scratch database has a random name on the server of
``FHIRFUS_TEST_POSTGRES_URL``, so runs never collide, and is dropped ``WITH (FORCE)`` afterwards
unless it is kept by name (a benchmark reusing a loaded database).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fhirfus.settings import test_postgres_url


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def scratch_postgres(count: int = 1, *, prefix: str = "fhirfus_test", keep: str | None = None,
                     server: str | None = None) -> Iterator[list[str]]:
    """URLs of ``count`` new empty databases, dropped afterwards; ``keep`` names one database to
    create if missing and leave in place (``count`` must then be 1)."""
    base = server or test_postgres_url()
    admin = create_engine(base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    names = [keep] if keep else [f"{prefix}_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    created: list[str] = []
    try:
        with admin.connect() as conn:
            for name in names:
                if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                    created.append(name)
        yield [make_url(base).set(database=name).render_as_string(hide_password=False) for name in names]
    finally:
        if not keep:
            with admin.connect() as conn:
                for name in created:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
