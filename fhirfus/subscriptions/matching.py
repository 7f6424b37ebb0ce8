"""Matching writes against Subscriptions: the store's write observer.

In the transaction of every write, before it commits, the versions written are matched against
the active Subscriptions of their type: each Subscription's compiled criteria run restricted to
the written rows (the index rows of the write are already there), as the Subscription's site sees
the data. Matches are queued in the same transaction, so a rolled-back write queues nothing and a
committed one cannot lose its notifications. Deletions are not notified (a criteria search cannot
match a deleted resource); a resource written twice in one transaction is notified once, for its
last version. With no active Subscription of a written type, a write costs a dictionary lookup and
one small read (whether the stored Subscriptions changed), which on PostgreSQL rides along the
write's own pipelined round trip (``fhirfus.db.rows.ride_along``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, func, select

from fhirfus.db import rows as db_rows
from fhirfus.db.visibility import EVERYTHING
from fhirfus.errors import BusinessRuleViolation
from fhirfus.store.repository import Stored
from fhirfus.subscriptions import queue
from fhirfus.subscriptions.active import ActiveSubscriptions, stamp_sql
from fhirfus.subscriptions.listener import CHANNEL

#: The name of the stamp's read riding along a write (``fhirfus.db.rows.ride_along``).
_STAMP = "subscriptions.stamp"


class Matcher:
    """Queues the notifications of each write; wakes the delivery worker after its commit."""

    def __init__(self, active: ActiveSubscriptions, clock: Callable[[], datetime], wake: threading.Event, *,
                 max_per_site: int = 0, announce: bool = False) -> None:
        """``announce``: tell the server processes (PostgreSQL ``NOTIFY``, sent at commit) when a
        write queued notifications; for a process that writes but does not deliver."""
        self.active = active
        self.announce = announce
        self.max_per_site = max_per_site
        self.clock = clock
        self.wake = wake
        self._lock = threading.Lock()
        self._touched: set[str] = set()

    def touched(self) -> set[str]:
        """The Subscriptions notifications were queued for since the last call (a rolled-back
        write's included: a worker then looks and finds nothing)."""
        with self._lock:
            touched, self._touched = self._touched, set()
        return touched

    def begun(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            db_rows.ride_along(conn, _STAMP, stamp_sql())

    def written(self, conn: Connection, versions: list[Stored]) -> None:
        if self.max_per_site > 0:
            self._check_limit(conn, {v.site for v in versions if v.res_type == "Subscription" and not v.deleted})
        stamp = db_rows.ridden(conn, _STAMP)
        by_type = self.active.by_type(conn, None if stamp is None else stamp[0])
        if not by_type:
            return
        latest: dict[tuple[str, str], Stored] = {}
        for version in versions:
            latest.pop((version.res_type, version.res_id), None)
            latest[(version.res_type, version.res_id)] = version  # last write of an id, in write order
        written: dict[str, list[Stored]] = {}
        for version in latest.values():
            if not version.deleted and version.pk is not None and version.res_type in by_type:
                written.setdefault(version.res_type, []).append(version)
        rows: list[tuple[int, str, str, str, int]] = []
        for res_type, group in written.items():
            order = {v.pk: n for n, v in enumerate(group)}
            for subscription in by_type[res_type]:
                candidates = [v for v in group if subscription.visibility.sees(v.site)]
                if not candidates:
                    continue
                matched = set(conn.execute(subscription.matches, {"pks": [v.pk for v in candidates]}).scalars())
                rows += [(order[v.pk], subscription.id, v.res_type, v.res_id, v.version)
                         for v in candidates if v.pk in matched]
        rows.sort(key=lambda row: row[0])
        queue.enqueue(conn, [row[1:] for row in rows], self.clock())
        if rows:
            with self._lock:
                self._touched.update(row[1] for row in rows)
            if self.announce and conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"NOTIFY {CHANNEL}")

    def _check_limit(self, conn: Connection, sites: set[str | None]) -> None:
        """422 (the write rolls back) when a site would hold more Subscriptions than the limit: each
        one costs a query on every write of its site, and each change recompiles all of them in
        every process, so their number is the server's to bound, not a client's."""
        rows = EVERYTHING.resources()
        for site in sites:
            held = conn.execute(select(func.count()).where(
                rows.c.res_type == "Subscription", rows.c.deleted.is_(False),
                rows.c.site.is_(None) if site is None else rows.c.site == site)).scalar_one()
            if held > self.max_per_site:
                raise BusinessRuleViolation(
                    f"{'Site ' + site if site else 'The server'} would hold {held} Subscriptions, more than the "
                    f"{self.max_per_site} allowed (FHIRFUS_SUBSCRIPTION_MAX_PER_SITE); delete some first",
                    "Subscription")

    def committed(self, versions: list[Stored]) -> None:
        self.wake.set()
