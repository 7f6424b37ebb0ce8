"""The active Subscriptions, compiled once and cached per process.

A Subscription is matched as the site that owns it sees the data (``db/visibility.py``): a site
client's Subscription carries its site's label, so it only ever matches rows of that site (and
chains or ``_has`` only go through them); one of no site (an administrator's) sees every row.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from sqlalchemy import Connection, Row, Select, bindparam, func, select
from sqlalchemy.dialects import postgresql

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


def load(conn: Connection, base_url: str) -> tuple[dict[str, Active], dict[str, str]]:
    """Every active Subscription by id, and those the server cannot honour (stored before it checked
    them, or under other rules) with the reason: the worker sets those to ``error``."""
    rows = EVERYTHING.resources()
    found: dict[str, Active] = {}
    broken: dict[str, str] = {}
    for row in conn.execute(select(rows.c.res_id, rows.c.site, rows.c.content).where(
            rows.c.res_type == "Subscription", rows.c.deleted.is_(False))):
        if (row.content or {}).get("status") != "active":
            continue
        try:
            found[row.res_id] = compile_subscription(conn, row.res_id, row.site, row.content, base_url)
        except FhirError as exc:
            broken[row.res_id] = f"This server cannot honour the Subscription: {exc.message}"
    return found, broken


#: The stamp of the stored Subscriptions: how many, and the sum of their version numbers, which
#: every write of one raises (a delete too). One statement built once: a write runs it.
_ROWS = EVERYTHING.resources()
STAMP = select(func.count(), func.coalesce(func.sum(_ROWS.c.version), 0)).where(_ROWS.c.res_type == "Subscription")


@cache
def stamp_sql() -> str:
    """``STAMP`` as PostgreSQL SQL without parameters, to ride along a write's round trip."""
    return str(STAMP.compile(dialect=postgresql.psycopg.dialect(), compile_kwargs={"literal_binds": True}))


class ActiveSubscriptions:
    """The process's cache of ``load``, keyed by ``STAMP``: each write reads the stamp (riding along
    its own writes on PostgreSQL: no round trip of its own) and reloads only when it moved, so a
    Subscription applies to every write that starts after it committed, in any process."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int] | None, dict[str, Active], dict[str, list[Active]], dict[str, str]] = \
            (None, {}, {}, {})

    def by_type(self, conn: Connection, stamp: Row | tuple | None = None) -> Mapping[str, list[Active]]:
        """``stamp``: ``STAMP``'s row as read in ``conn``'s transaction already (None: read it now)."""
        return self._current(conn, stamp)[2]

    def get(self, conn: Connection, subscription_id: str) -> Active | None:
        return self._current(conn)[1].get(subscription_id)

    def broken(self, conn: Connection) -> Mapping[str, str]:
        """Active Subscriptions the server cannot honour, with the reason."""
        return self._current(conn)[3]

    def _current(self, conn: Connection, read: Row | tuple | None = None) -> tuple:
        count, total = read if read is not None else conn.execute(STAMP).one()
        stamp = (int(count), int(total))
        cached = self._cached
        if cached[0] == stamp:
            return cached
        by_id, broken = load(conn, self.base_url)
        by_type: dict[str, list[Active]] = {}
        for active in by_id.values():
            by_type.setdefault(active.res_type, []).append(active)
        fresh = (stamp, by_id, by_type, broken)
        with self._lock:
            self._cached = fresh
        return fresh
