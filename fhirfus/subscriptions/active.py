"""The active Subscriptions, compiled once and cached per process.

A Subscription is matched as the site that owns it sees the data (``db/visibility.py``): a site
client's Subscription carries its site's label, so it only ever matches rows of that site (and
chains or ``_has`` only go through them); one of no site (an administrator's) sees every row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, Select, bindparam, select

from fhirfus.db.visibility import EVERYTHING, Visibility
from fhirfus.domain.subscription import Channel, channel_of, parse_criteria
from fhirfus.errors import FhirError
from fhirfus.search.compiler import Compiler
from fhirfus.store import repository


@dataclass(frozen=True)
class Active:
    """One active Subscription: whose data it sees, what it matches, where notifications go."""

    id: str
    site: str | None
    res_type: str
    channel: Channel
    #: ``SELECT pk`` of the visible, live resources among ``:pks`` that match the criteria.
    matches: Select

    @property
    def visibility(self) -> Visibility:
        return Visibility(self.site) if self.site is not None else EVERYTHING


def compile_subscription(conn: Connection, res_id: str, site: str | None, content: dict, base_url: str) -> Active:
    """The criteria of a stored Subscription as one statement, with the written rows as parameter."""
    query = parse_criteria(content.get("criteria"))
    seen_by = Visibility(site) if site is not None else EVERYTHING
    compiler = Compiler(base_url, seen_by, repository.terminology_lookup(conn, seen_by))
    rows = seen_by.resources()
    statement = select(rows.c.pk).where(
        rows.c.pk.in_(bindparam("pks", expanding=True)), rows.c.res_type == query.res_type,
        rows.c.deleted.is_(False), *[compiler.criterion(rows, criterion) for criterion in query.criteria])
    return Active(res_id, site, query.res_type, channel_of(content), statement)


def load(conn: Connection, base_url: str) -> dict[str, Active]:
    """Every active Subscription by id (one the server can no longer compile is left out)."""
    rows = EVERYTHING.resources()
    found: dict[str, Active] = {}
    for row in conn.execute(select(rows.c.res_id, rows.c.site, rows.c.content).where(
            rows.c.res_type == "Subscription", rows.c.deleted.is_(False))):
        if (row.content or {}).get("status") != "active":
            continue
        try:
            found[row.res_id] = compile_subscription(conn, row.res_id, row.site, row.content, base_url)
        except FhirError:
            continue  # accepted under other rules (an older server); it waits to be corrected
    return found


class ActiveSubscriptions:
    """The process's cache of ``load``: re-read when this process wrote a Subscription, and at most
    ``refresh`` seconds after another process did."""

    def __init__(self, base_url: str, refresh: float) -> None:
        self.base_url = base_url
        self.refresh = refresh
        self._lock = threading.Lock()
        self._by_id: dict[str, Active] = {}
        self._by_type: dict[str, list[Active]] = {}
        self._loaded = float("-inf")
        self._generation = 0

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._loaded = float("-inf")

    def by_type(self, conn: Connection) -> Mapping[str, list[Active]]:
        self._refresh(conn)
        return self._by_type

    def get(self, conn: Connection, subscription_id: str) -> Active | None:
        self._refresh(conn)
        return self._by_id.get(subscription_id)

    def _refresh(self, conn: Connection) -> None:
        if time.monotonic() - self._loaded < self.refresh:
            return
        started, generation = time.monotonic(), self._generation
        by_id = load(conn, self.base_url)
        by_type: dict[str, list[Active]] = {}
        for active in by_id.values():
            by_type.setdefault(active.res_type, []).append(active)
        with self._lock:
            self._by_id, self._by_type = by_id, by_type
            if generation == self._generation:  # an invalidation during the load forces the next one
                self._loaded = started
