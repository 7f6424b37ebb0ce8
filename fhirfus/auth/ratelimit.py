"""Rate limits counted once per deployment, whatever the number of processes and hosts.

Counts live where every process sees them: the database (``auth_rate_counts``) by default, Redis
when ``FHIRFUS_REDIS_URL`` is set. A limit is N requests per sliding minute, estimated from two
fixed one-minute windows: the current window's count plus the previous window's, weighted by the
part of it the last minute still covers.

- ``ReconciledLimiter`` (``/fhir`` requests, per client) decides in memory, so a request costs no
  round trip: each process counts its own requests, and a thread of its own reconciles with the
  shared counts every ``interval`` seconds (``FHIRFUS_RATE_LIMIT_SYNC_MS``), adding what the
  process counted and reading back every caller's totals under that limit. A process therefore
  sees the other processes' requests at most two intervals late (one until they share them, one
  until it reads them; plus the time a reconciliation takes). **Bound:** a client can exceed its
  limit by what the *other* processes admit for it within two intervals — with P processes each
  serving it r requests per second, at most (P − 1) × r × 2 × interval requests, and never more
  than (P − 1) × the limit, since no process admits beyond the limit on its own.
- ``ExactLimiter`` (the token endpoint, per client and per remote address) adds each request to the
  shared count at once: token requests are rare. A refused request is taken back out, and its
  caller is refused from memory until its ``Retry-After`` has passed, so hammering costs no
  round trips.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sqlalchemy import Connection, delete, select
from sqlalchemy.exc import SQLAlchemyError

from fhirfus.db.engine import upsert_insert
from fhirfus.db.tables import auth_rate_counts
from fhirfus.store.repository import Store

log = logging.getLogger("fhirfus.ratelimit")
WINDOW = 60
#: Callers refused from memory are forgotten beyond this many (expired entries first).
MAX_REFUSED = 10_000


class CountsUnavailable(Exception):
    """The shared counts could not be read or written (database or Redis not answering)."""


class SharedCounts(Protocol):
    """Request counts per (limit name, window, caller) that every process of a deployment sees."""

    def exchange(self, name: str, deltas: Mapping[tuple[int, str], int], window: int) -> dict[str, tuple[int, int]]:
        """Add ``deltas`` ((window, caller) → requests) to limit ``name``, then return the (``window``,
        previous window) counts of every caller counted in either."""
        ...

    def add(self, name: str, window: int, caller: str, amount: int) -> tuple[int, int]:
        """Add ``amount`` to one caller's count in ``window``; its (``window``, previous window) counts after that."""
        ...


def _position(now: float) -> tuple[int, float]:
    """The window ``now`` falls in, and how far into it (0 ≤ fraction < 1)."""
    window = int(now // WINDOW)
    return window, now / WINDOW - window


def _fits(current: int, previous: int, fraction: float, limit: int) -> bool:
    """Whether one more request keeps the sliding-minute estimate within ``limit`` (rounding forgiven)."""
    return previous * (1 - fraction) + current + 1 <= limit + 1e-9


def _wait(current: int, previous: int, fraction: float, limit: int) -> int:
    """Whole seconds until one more request fits under ``limit`` if nobody asks meanwhile."""
    if current + 1 <= limit:  # the previous window's weight has to shrink far enough
        needed = 1 - (limit - 1 - current) / previous if previous else fraction
        seconds = (needed - fraction) * WINDOW
    else:  # after this window ends, its count is the previous window's and shrinks from there
        seconds = (1 - fraction + 1 - (limit - 1) / current) * WINDOW
    return max(1, math.ceil(seconds - 1e-9))


class ReconciledLimiter:
    """One limit decided from memory and reconciled with ``SharedCounts`` (see module docstring)."""

    def __init__(self, counts: SharedCounts, name: str, per_minute: int, interval: float,
                 now: Callable[[], float] = time.time) -> None:
        if interval <= 0:
            raise ValueError("FHIRFUS_RATE_LIMIT_SYNC_MS must be positive")
        self.counts = counts
        self.name = name
        self.limit = per_minute
        self.interval = interval
        self.now = now
        self.reconciliations = 0
        #: Everyone's counts as last read: caller → (window, its count, the previous window's).
        self._known: dict[str, tuple[int, int, int]] = {}
        #: This process's requests that ``_known`` does not hold yet: caller → [window, count, previous].
        self._unshared: dict[str, list[int]] = {}
        #: The same requests, to be shared: (window, caller) → count.
        self._pending: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def retry_after(self, caller: str) -> int:
        """0 when the request may proceed (and it is counted), else seconds to wait."""
        if self.limit <= 0:
            return 0
        now = self.now()
        window = int(now // WINDOW)
        fraction = now / WINDOW - window
        with self._lock:
            current = previous = 0
            known = self._known.get(caller)
            if known is not None and known[0] == window:
                current, previous = known[1], known[2]
            elif known is not None and known[0] == window - 1:
                previous = known[1]
            mine = self._unshared.get(caller)
            if mine is not None and mine[0] != window:  # a window has turned since this caller's last request
                mine = self._unshared[caller] = [window, 0, mine[1] if mine[0] == window - 1 else 0]
            if mine is not None:
                current += mine[1]
                previous += mine[2]
            if not _fits(current, previous, fraction, self.limit):
                return _wait(current, previous, fraction, self.limit)
            if mine is None:
                mine = self._unshared[caller] = [window, 0, 0]
            mine[1] += 1
            self._pending[(window, caller)] = self._pending.get((window, caller), 0) + 1
            return 0

    def reconcile(self) -> None:
        """Share this process's counts and read everyone's (every ``interval``, once ``start``-ed)."""
        window, _ = _position(self.now())
        with self._lock:
            sending, self._pending = self._pending, {}
        try:
            counts = self.counts.exchange(self.name, sending, window)
        except CountsUnavailable:
            log.warning("rate-limit counts not shared this round", exc_info=True)
            with self._lock:
                for item, count in sending.items():
                    self._pending[item] = self._pending.get(item, 0) + count
            return
        with self._lock:
            self._known = {caller: (window, current, previous) for caller, (current, previous) in counts.items()}
            for (sent_window, caller), count in sending.items():  # now in _known: no longer this process's alone
                mine = self._unshared.get(caller)
                if mine is not None and mine[0] == sent_window:
                    mine[1] -= count
                elif mine is not None and mine[0] == sent_window + 1:
                    mine[2] -= count
            self._unshared = {caller: mine for caller, mine in self._unshared.items()
                              if mine[0] >= window - 1 and (mine[1] or mine[2])}
            self.reconciliations += 1

    def start(self) -> None:
        if self.limit > 0:
            self._thread = threading.Thread(target=self._run, name=f"fhirfus-ratelimit-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self.reconcile()  # what this process counted last still counts for the others

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.reconcile()


class ExactLimiter:
    """One limit counted in ``SharedCounts`` on every request (see module docstring)."""

    def __init__(self, counts: SharedCounts, name: str, per_minute: int, now: Callable[[], float] = time.time) -> None:
        self.counts = counts
        self.name = name
        self.limit = per_minute
        self.now = now
        self._refused_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def retry_after(self, caller: str) -> int:
        """0 when the request may proceed (and it is counted), else seconds to wait; ``CountsUnavailable``."""
        if self.limit <= 0:
            return 0
        now = self.now()
        with self._lock:
            until = self._refused_until.get(caller, 0.0)
        if until > now:
            return max(1, math.ceil(until - now - 1e-9))
        window, fraction = _position(now)
        current, previous = self.counts.add(self.name, window, caller, 1)
        if _fits(current - 1, previous, fraction, self.limit):
            return 0
        self.counts.add(self.name, window, caller, -1)
        wait = _wait(current - 1, previous, fraction, self.limit)
        with self._lock:
            if len(self._refused_until) >= MAX_REFUSED:
                self._refused_until = {k: t for k, t in self._refused_until.items() if t > now}
                if len(self._refused_until) >= MAX_REFUSED:
                    self._refused_until.clear()
            self._refused_until[caller] = now + wait
        return wait


class DatabaseCounts:
    """``SharedCounts`` in the ``auth_rate_counts`` table; windows older than the previous one are swept."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._swept_window = -1

    @staticmethod
    def _upsert(conn: Connection) -> Any:
        statement = upsert_insert(conn, auth_rate_counts)
        return statement.on_conflict_do_update(
            index_elements=["name", "window_start", "key"],
            set_={"count": auth_rate_counts.c.count + statement.excluded["count"]})

    def exchange(self, name: str, deltas: Mapping[tuple[int, str], int], window: int) -> dict[str, tuple[int, int]]:
        rows = [{"name": name, "window_start": w, "key": caller, "count": n}
                for (w, caller), n in sorted(deltas.items()) if n]
        sweep = window != self._swept_window
        try:
            with (self.store.writing() if rows or sweep else self.store.reading()) as conn:
                if rows:  # sorted: concurrent exchanges lock rows in the same order (no deadlock)
                    conn.execute(self._upsert(conn), rows)
                if sweep:
                    conn.execute(delete(auth_rate_counts).where(auth_rate_counts.c.window_start < window - 1))
                found = conn.execute(select(auth_rate_counts).where(
                    auth_rate_counts.c.name == name, auth_rate_counts.c.window_start.in_((window - 1, window)))).all()
        except SQLAlchemyError as exc:
            raise CountsUnavailable(str(exc)) from exc
        self._swept_window = window
        counts: dict[str, list[int]] = {}
        for row in found:
            counts.setdefault(row.key, [0, 0])[0 if row.window_start == window else 1] = row._mapping["count"]
        return {caller: (current, previous) for caller, (current, previous) in counts.items()}

    def add(self, name: str, window: int, caller: str, amount: int) -> tuple[int, int]:
        try:
            with self.store.writing() as conn:
                current = conn.execute(
                    self._upsert(conn).values(name=name, window_start=window, key=caller, count=amount)
                    .returning(auth_rate_counts.c.count)).scalar_one()
                previous = conn.execute(select(auth_rate_counts.c.count).where(
                    auth_rate_counts.c.name == name, auth_rate_counts.c.window_start == window - 1,
                    auth_rate_counts.c.key == caller)).scalar()
        except SQLAlchemyError as exc:
            raise CountsUnavailable(str(exc)) from exc
        return current, previous or 0


class RedisCounts:
    """``SharedCounts`` in Redis: one hash per (limit name, window), caller → count, expiring after three windows."""

    def __init__(self, url: str, prefix: str = "fhirfus:rate:") -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)

    def _hash(self, name: str, window: int) -> str:
        return f"{self.prefix}{name}:{window}"

    def exchange(self, name: str, deltas: Mapping[tuple[int, str], int], window: int) -> dict[str, tuple[int, int]]:
        pipe = self.redis.pipeline(transaction=False)
        for (w, caller), count in deltas.items():
            pipe.hincrby(self._hash(name, w), caller, count)
        for w in {w for w, _ in deltas}:
            pipe.expire(self._hash(name, w), 3 * WINDOW)
        pipe.hgetall(self._hash(name, window))
        pipe.hgetall(self._hash(name, window - 1))
        try:
            *_, current, previous = pipe.execute()
        except self._errors as exc:
            raise CountsUnavailable(str(exc)) from exc
        callers = {c.decode() for c in current} | {c.decode() for c in previous}
        return {c: (int(current.get(c.encode(), 0)), int(previous.get(c.encode(), 0))) for c in callers}

    def add(self, name: str, window: int, caller: str, amount: int) -> tuple[int, int]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self._hash(name, window), caller, amount)
        pipe.expire(self._hash(name, window), 3 * WINDOW)
        pipe.hget(self._hash(name, window - 1), caller)
        try:
            current, _, previous = pipe.execute()
        except self._errors as exc:
            raise CountsUnavailable(str(exc)) from exc
        return int(current), int(previous or 0)


def shared_counts(store: Store, redis_url: str | None) -> SharedCounts:
    """Redis when configured, else the database."""
    return RedisCounts(redis_url) if redis_url else DatabaseCounts(store)
