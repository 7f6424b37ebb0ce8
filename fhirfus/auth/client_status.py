"""Whether a client's access tokens still work: a per-process snapshot of enabled clients.

Access tokens are verified without the database, so a disabled or removed client's tokens would
work until they expire. Instead every process re-reads which clients exist and are enabled every
``interval`` seconds (``FHIRFUS_CLIENT_RECHECK_MS``; one query of ids, on a thread of its own,
never on a request) and the gate refuses the tokens of a client that is disabled, or that has gone
from the registry. A disabled or removed client's tokens thus stop working within ``interval``
seconds plus one query. A client the snapshots have never shown was registered since the last
one: its token is trusted if it was issued after that snapshot was taken, until the next one.
If the database does not answer, the last snapshot stays in use: requests then fail on their own
database work anyway. Without any snapshot yet (the first read failed at start-up) no token is
trusted, and the read is tried again every second until one succeeds: the server starts all the same.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import select

from fhirfus.db.tables import auth_clients
from fhirfus.store.repository import Store

log = logging.getLogger("fhirfus.auth")


class ClientStatus:
    def __init__(self, store: Store, interval: float, now: Callable[[], float] = time.time) -> None:
        if interval <= 0:
            raise ValueError("FHIRFUS_CLIENT_RECHECK_MS must be positive")
        self.store = store
        self.interval = interval
        self.now = now
        self._enabled: frozenset[str] = frozenset()
        self._seen: frozenset[str] = frozenset()  # in any snapshot so far: gone now means removed
        self._as_of = float("inf")  # no snapshot yet: nothing is trusted
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        as_of = self.now()  # taken before the query: a client registered during it counts as newer
        with self.store.reading() as conn:
            rows = conn.execute(select(auth_clients.c.client_id, auth_clients.c.disabled_at)).all()
        enabled = frozenset(r.client_id for r in rows if r.disabled_at is None)
        self._seen, self._enabled, self._as_of = self._seen | {r.client_id for r in rows}, enabled, as_of

    def allows(self, client_id: str, issued_at: int) -> bool:
        """Whether a token of ``client_id`` issued at ``issued_at`` (``iat``, whole seconds: issued
        within the second after it) may still be used."""
        if client_id in self._enabled:
            return True
        if client_id in self._seen:
            return False  # disabled, or removed since a snapshot showed it
        return issued_at + 1 > self._as_of

    def start(self) -> None:
        """Read the first snapshot now (if the database answers), then keep it fresh on a daemon thread."""
        try:
            self.refresh()
        except Exception:
            log.warning("could not read client status at start-up; no token is trusted until it is read",
                        exc_info=True)
        self._thread = threading.Thread(target=self._run, name="fhirfus-client-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval if self._as_of != float("inf") else min(self.interval, 1.0)):
            try:
                self.refresh()
            except Exception:
                log.warning("could not re-read client status", exc_info=True)
