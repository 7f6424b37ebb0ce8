"""What the tests and the benchmarks both need: throw-away PostgreSQL databases, free ports, waiting
for a started server to answer, and a receiver of Subscription notifications (a real HTTP server that
records what it is sent).

Not used by the server. A scratch database has a random name on the server of
``FHIRFUS_TEST_POSTGRES_URL``, so runs never collide, and is dropped ``WITH (FORCE)`` afterwards
unless it is kept by name (a benchmark reusing a loaded database).
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fhirfus.settings import test_postgres_url


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NotReady(RuntimeError):
    """A server waited on by ``wait_until_ready`` exited, or did not answer in time; the caller adds
    its own name and log."""


def wait_until_ready(url: str, process: subprocess.Popen, timeout: float, *, interval: float = 0.1,
                     request_timeout: float = 2.0) -> None:
    """Return once ``url`` answers 200; ``NotReady`` as soon as ``process`` exits, or after ``timeout``
    seconds (a refused or slow connection is a server still starting, not an error)."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise NotReady(f"exited with status {process.returncode}")
        try:
            if httpx.get(url, timeout=request_timeout).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise NotReady(f"did not answer {url} within {timeout:.0f} s")
        time.sleep(interval)


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


@dataclass(frozen=True)
class Received:
    """One request a ``Receiver`` took: when (``time.monotonic``), how, and what."""

    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP endpoint on a fixed loopback port that records every request and answers ``status``
    (200 unless told otherwise); ``stop``/``start`` take it down and bring it back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.status = 200
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver
            def _take(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                entry = Received(time.monotonic(), self.command, self.path, dict(self.headers.items()), body)
                with receiver._changed:
                    if receiver.status < 300:
                        receiver.received.append(entry)
                    receiver._changed.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = _take  # the names http.server dispatches to

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first ``count`` accepted requests, once there are that many (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received)} of {count} notifications arrived within {timeout} s")
                self._changed.wait(left)
            return list(self.received[:count])
