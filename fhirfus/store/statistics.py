"""Planner statistics kept fresh after writes through any path, not only ``fhirfus load``.

PostgreSQL plans a search from its statistics. Tables that grew since their last ``ANALYZE``
are misjudged: right after thousands of resources arrive through transactions, the planner
takes a ``code`` criterion matching thousands of index rows for one matching a single row,
starts its plan there, and every search is slow until autovacuum happens to come by (it looks
once a minute at best, and only counts what it sees).

So each server process counts the resources it writes: the keeper is one of the store's write
observers (``Store.observe``), told the versions of each transaction after it committed (a
rolled-back one counts nothing). Once a process has written more than ``min_rows`` plus ``fraction`` of the resources the
statistics last knew of, a thread of its own runs ``ANALYZE`` on the resource and index tables,
at most once per ``min_interval`` seconds, under an advisory lock so that processes and hosts do
not analyse the same tables at once. Writers never wait for it. SQLite needs none of this: its
planner reads the indexes, not sampled statistics.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from fhirfus.db.tables import SEARCHED_TABLE_NAMES
from fhirfus.store.repository import Stored

log = logging.getLogger("fhirfus.statistics")

#: One key for every fhirfus process of a database (pg advisory locks are per database).
ADVISORY_LOCK = 0x66687266  # "fhrf"
#: The current resources (first: their count is the growth measure) and the search index.
STATISTICS_TABLES = SEARCHED_TABLE_NAMES
#: The keeper's name among the store's write observers.
OBSERVER = "statistics"


class StatisticsKeeper:
    """Runs ``ANALYZE`` on ``tables`` when this process's writes have made their statistics stale
    (a write observer of the store: ``Store.observe(OBSERVER, keeper)``)."""

    def __init__(self, engine: Engine, tables: Sequence[str], *, min_rows: int, fraction: float,
                 min_interval: float, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.tables = tuple(tables)
        self.min_rows = min_rows
        self.fraction = fraction
        self.min_interval = min_interval
        self.clock = clock
        self.runs = 0  # ANALYZE runs of this process (for tests and the bench)
        self._written = 0  # resources written by this process since its last ANALYZE
        self._known = 0.0  # resources the statistics counted at the last look
        self._last_run = -min_interval
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def begun(self, conn: Connection) -> None:
        """Nothing to read along a write: the keeper only counts, after the commit."""

    def written(self, conn: Connection, versions: list[Stored]) -> None:
        """Nothing to do inside the transaction: only committed versions count."""

    def committed(self, versions: list[Stored]) -> None:
        self.wrote(len(versions))

    @property
    def pending(self) -> int:
        """Resources written by this process since its last ``ANALYZE``."""
        with self._lock:
            return self._written

    def wrote(self, resources: int) -> None:
        """Called after a commit that wrote ``resources`` resource versions; cheap and non-blocking."""
        if resources <= 0:
            return
        with self._lock:
            self._written += resources
            due = self._written > self.min_rows + self.fraction * self._known
        if due:
            self._wake.set()

    def start(self) -> None:
        if self.engine.dialect.name != "postgresql" or self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="fhirfus-statistics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        try:  # in this thread, so that a slow or refused look never holds up the server's start
            self._known = self._resource_estimate()
        except SQLAlchemyError as exc:
            log.warning("reading the planner's row estimate failed: %s", exc)
        while not self._stopping.is_set():
            self._wake.wait()
            if self._stopping.is_set():
                return
            wait = self._last_run + self.min_interval - self.clock()
            if wait > 0 and self._stopping.wait(wait):
                return
            self._wake.clear()
            try:
                self._analyze()
            except SQLAlchemyError as exc:  # a failed refresh costs speed, never a request
                log.warning("ANALYZE after writes failed: %s", exc)
            self._last_run = self.clock()

    def _analyze(self) -> None:
        with self._lock:
            written, self._written = self._written, 0
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK}).scalar():
                with self._lock:  # another process is analysing now; count these rows again next time
                    self._written += written
                return
            try:
                conn.exec_driver_sql("SET statement_timeout = 0")
                for table in self.tables:
                    conn.exec_driver_sql(f'ANALYZE "{table}"')
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK})
        self.runs += 1
        self._known = self._resource_estimate()
        log.info("statistics refreshed after %d resources written", written)

    def _resource_estimate(self) -> float:
        """The number of resources the planner's statistics know of (0 before any ANALYZE)."""
        with self.engine.connect() as conn:
            estimate = conn.execute(
                text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:name)"), {"name": self.tables[0]}
            ).scalar()
        return max(float(estimate or 0), 0.0)
