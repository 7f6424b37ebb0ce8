"""The versioned resource repository: current versions, history, tombstones.

Every read takes the caller's ``Visibility`` (``fhirfus.db.visibility``): what it may not see
comes back as None, exactly as an id never used. Writes record the id's owning site.

Versions are assigned inside the writing transaction: the current row is locked
(``SELECT … FOR UPDATE`` on PostgreSQL; SQLite write transactions are ``BEGIN IMMEDIATE`` and
therefore serial) and the update is guarded by the version it read, so concurrent writers can
neither lose an update nor duplicate a version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache, partial
from typing import Any, Protocol

import psycopg
from sqlalchemy import Connection, Engine, Text, and_, bindparam, case, cast, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from fhirfus.db import rows
from fhirfus.db.async_pool import AsyncReadPool, Statement
from fhirfus.db.tables import resource_history, resources, search_uri
from fhirfus.db.visibility import PUBLISHED, Visibility, site_label, with_site_label
from fhirfus.errors import Conflict, Forbidden
from fhirfus.search import index as indexer
from fhirfus.search.compiler import param_rows


@dataclass(frozen=True)
class Stored:
    """One version of a resource as stored (``content`` is None for a delete)."""

    res_type: str
    res_id: str
    version: int
    last_updated: datetime
    deleted: bool
    content: dict | None
    method: str = ""
    pk: int | None = None
    site: str | None = None
    #: the stored JSON as PostgreSQL keeps it (``current_raw``): sent as it is, parsed only when
    #: another rendering (XML, ``_pretty``, ``_summary``, ``_elements``) needs it; ``content`` is then None
    raw: bytes | None = None


@lru_cache(maxsize=1024)
def format_instant(moment: datetime) -> str:
    """FHIR instant with microseconds, UTC as 'Z'. Remembered: a bulk create stamps every resource,
    its history row and its response entry with the same moment."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def stamp(content: dict, res_id: str, version: int, moment: datetime) -> dict:
    """Server-owned fields: id and meta.versionId/lastUpdated (the rest of meta is kept)."""
    meta = dict(content.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = format_instant(moment)
    stamped = {"resourceType": content["resourceType"], "id": res_id, "meta": meta}
    stamped.update({k: v for k, v in content.items() if k not in ("resourceType", "id", "meta")})
    return stamped


class WriteObserver(Protocol):
    """Told about the resource versions of every write transaction (``Store.observe``): how layers
    above the store (Subscriptions) follow writes without the store importing them, and how the
    planner statistics learn how much was written (``statistics.py``)."""

    def begun(self, conn: Connection) -> None:
        """At the start of a write transaction, before its first write: a read the observer will
        need in ``written`` may ride along the transaction's writes (``fhirfus.db.rows.ride_along``)."""

    def written(self, conn: Connection, versions: list[Stored]) -> None:
        """Inside the transaction, after its last write and before its commit: what it writes here
        commits (or rolls back) with the versions."""

    def committed(self, versions: list[Stored]) -> None:
        """After a transaction that wrote ``versions`` committed."""


#: Key of ``Connection.info`` under which a write transaction collects the versions it writes (the
#: pooled connection's info outlives a transaction: ``Store.writing`` sets and removes it).
WRITTEN = "fhirfus.written"


def _written(conn: Connection, *versions: Stored) -> None:
    collected = conn.info.get(WRITTEN)
    if collected is not None:
        collected.extend(versions)


class Store:
    """Entry point of the storage layer: an engine plus transaction scopes."""

    def __init__(self, engine: Engine, async_reads: AsyncReadPool | None = None) -> None:
        self.engine = engine
        #: reads by id on the event loop (PostgreSQL; None: reads run on threads through ``reading``)
        self.async_reads = async_reads
        self._observers: dict[str, WriteObserver] = {}

    @property
    def observers(self) -> list[WriteObserver]:
        return list(self._observers.values())

    def observe(self, name: str, observer: WriteObserver) -> None:
        """Have ``observer`` told about the versions of every write transaction of this store, in
        place of an earlier one of that ``name`` (two apps over one store do not observe twice)."""
        self._observers[name] = observer

    def observer(self, name: str) -> WriteObserver | None:
        """The observer of that ``name``, if any."""
        return self._observers.get(name)

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction (committed on success, rolled back on any exception). Its observers
        see the resource versions it wrote before it commits, and are told after it did."""
        versions: list[Stored] = []
        with self.engine.connect() as conn:
            conn.execution_options(fhirfus_write=True)
            conn.info[WRITTEN] = versions
            try:
                with conn.begin():
                    for observer in self.observers:
                        observer.begun(conn)
                    yield conn
                    if versions:
                        for observer in self.observers:
                            observer.written(conn, versions)
            finally:
                conn.info.pop(WRITTEN, None)
                rows.forget_riders(conn)
        if versions:
            for observer in self.observers:
                observer.committed(versions)

    def analyze(self) -> None:
        """Refresh planner statistics after a bulk load (PostgreSQL plans chains badly without them)."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read scope. On PostgreSQL in autocommit mode: each statement already sees a consistent
        snapshot under READ COMMITTED, so BEGIN/COMMIT would only add two round trips."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="AUTOCOMMIT")
                yield conn
            else:
                with conn.begin():
                    yield conn


# --- reads -----------------------------------------------------------------------------------

_CURRENT_COLUMNS = (
    resources.c.pk,
    resources.c.res_type,
    resources.c.res_id,
    resources.c.version,
    resources.c.last_updated,
    resources.c.deleted,
    resources.c.content,
    resources.c.site,
)


def current(
    conn: Connection, seen_by: Visibility, res_type: str, res_id: str, *, for_update: bool = False
) -> Stored | None:
    """The current version (possibly a tombstone), or None if the id was never used or ``seen_by``
    may not see it (the two are one answer). ``for_update``: the caller is about to write it, which
    a published resource refuses (403) but to its publisher."""
    query = select(*_CURRENT_COLUMNS).where(
        resources.c.res_type == res_type, resources.c.res_id == res_id, seen_by.rows_of(resources))
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        return None
    if for_update and not seen_by.may_change(row.site):
        raise Forbidden(f"{res_type}/{res_id} is published by the server from its implementation guide; "
                        "clients cannot change or delete it", f"{res_type}.id")
    return Stored(row.res_type, row.res_id, row.version, row.last_updated, row.deleted, row.content, pk=row.pk,
                  site=row.site)


@cache
def _current_raw_sql(seen_by: Visibility) -> Statement:
    """``current``'s statement for ``seen_by``, compiled once (the content as text: the stored
    bytes go out without a parse)."""
    return Statement.of(select(
        resources.c.version, resources.c.last_updated, resources.c.deleted, cast(resources.c.content, Text),
        resources.c.site).where(resources.c.res_type == bindparam("res_type", ""),
                                resources.c.res_id == bindparam("res_id", ""), seen_by.rows_of(resources)))


async def current_raw(pool: AsyncReadPool, seen_by: Visibility, res_type: str, res_id: str) -> Stored | None:
    """``current`` on the event loop, its content as stored (``Stored.raw``): None for an id never
    used or not visible to ``seen_by``, a tombstone as ``deleted``."""
    row = await _fetch_one(pool, _current_raw_sql(seen_by), {"res_type": res_type, "res_id": res_id})
    if row is None:
        return None
    version_id, last_updated, deleted, raw, site = row
    return Stored(res_type, res_id, version_id, last_updated, deleted, None, site=_text(site), raw=raw)


@cache
def _version_raw_sql(seen_by: Visibility) -> Statement:
    """``version``'s statement for ``seen_by`` beside the visibility of the current row, compiled
    once: the current row with the asked version joined (no current row: not visible or unknown)."""
    r, h = resources, resource_history
    joined = r.outerjoin(h, and_(h.c.res_type == r.c.res_type, h.c.res_id == r.c.res_id,
                                 h.c.version == bindparam("version", 0), seen_by.rows_of(h)))
    return Statement.of(select(h.c.version, h.c.last_updated, h.c.method, cast(h.c.content, Text), h.c.site)
                        .select_from(joined).where(r.c.res_type == bindparam("res_type", ""),
                                                   r.c.res_id == bindparam("res_id", ""), seen_by.rows_of(r)))


async def version_raw(
    pool: AsyncReadPool, seen_by: Visibility, res_type: str, res_id: str, version_id: int,
) -> tuple[bool, Stored | None]:
    """``version`` on the event loop, its content as stored: (whether the id is visible at all, the
    version or None)."""
    row = await _fetch_one(pool, _version_raw_sql(seen_by),
                           {"res_type": res_type, "res_id": res_id, "version": version_id})
    if row is None:
        return False, None
    found, last_updated, method, raw, site = row
    if found is None:
        return True, None
    return True, Stored(res_type, res_id, found, last_updated, method == b"DELETE", None, _text(method) or "",
                        site=_text(site), raw=raw)


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode()


async def _fetch_one(pool: AsyncReadPool, statement: Statement, values: dict[str, Any]) -> Any:
    """One row of a prepared statement on a pooled connection (a read: retried once on a fresh
    connection when the server closed the pooled ones, as a restart does)."""
    try:
        return await pool.fetch_one(statement, values)
    except psycopg.errors.QueryCanceled:
        raise
    except psycopg.OperationalError:
        await pool.discard_idle()
    return await pool.fetch_one(statement, values)


def version(conn: Connection, seen_by: Visibility, res_type: str, res_id: str, version_id: int) -> Stored | None:
    """One version of a visible id (None: no such version, or not visible)."""
    h = resource_history
    row = conn.execute(
        select(h).where(h.c.res_type == res_type, h.c.res_id == res_id, h.c.version == version_id, seen_by.rows_of(h))
    ).first()
    if row is None:
        return None
    return Stored(
        row.res_type, row.res_id, row.version, row.last_updated, row.method == "DELETE", row.content, row.method,
        site=row.site,
    )


def versions(conn: Connection, seen_by: Visibility, keys: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], Stored]:
    """Several versions at once, by (type, id, version): those that exist and ``seen_by`` may see."""
    h = resource_history
    found: dict[tuple[str, str, int], Stored] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        for row in conn.execute(select(h).where(tuple_(h.c.res_type, h.c.res_id, h.c.version).in_(chunk),
                                                seen_by.rows_of(h))):
            found[(row.res_type, row.res_id, row.version)] = Stored(
                row.res_type, row.res_id, row.version, row.last_updated, row.method == "DELETE", row.content,
                row.method, site=row.site)
    return found


def by_canonical(conn: Connection, seen_by: Visibility, res_type: str, canonical: str) -> dict | None:
    """The newest live resource of ``res_type`` (a conformance resource) whose ``url`` is
    ``canonical`` (``url|version`` also matches the version), among those ``seen_by`` may see.

    Owners come first in the order of trust: what the server publishes, then what no site owns (an
    administrator's), then a site's: a site client cannot shadow, for unconfined callers, a value
    set or code system of the server or of an administrator by storing one with its URL."""
    url, _, wanted_version = canonical.partition("|")
    statement = (
        select(resources.c.content)
        .where(
            resources.c.res_type == res_type, resources.c.deleted.is_(False), seen_by.rows_of(resources),
            resources.c.pk.in_(select(search_uri.c.resource_pk).where(
                search_uri.c.res_type == res_type, param_rows(search_uri, res_type, "url"), search_uri.c.value == url)),
        )
        .order_by(case((resources.c.site == PUBLISHED, 0), (resources.c.site.is_(None), 1), else_=2),
                  resources.c.last_updated.desc())
    )
    if not wanted_version:
        statement = statement.limit(1)
    for content in conn.execute(statement).scalars():
        if not wanted_version or (content or {}).get("version") == wanted_version:
            return content
    return None


def terminology_lookup(conn: Connection, seen_by: Visibility) -> Callable[[str, str], dict | None]:
    """ValueSets and CodeSystems stored here, by canonical, for expanding ``:in`` value sets (each
    looked up once per connection use: a request's criteria often name the same value set)."""
    return cache(partial(by_canonical, conn, seen_by))


def taken(conn: Connection, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (type, id) keys are used, by anyone, tombstones included.

    Deliberately unconfined: ids are one namespace, and a writer that may choose ids (never a
    site client) must know which are free to create them in bulk. Never an answer to a caller."""
    found: set[tuple[str, str]] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        found.update((row.res_type, row.res_id) for row in conn.execute(
            select(resources.c.res_type, resources.c.res_id).where(tuple_(resources.c.res_type, resources.c.res_id).in_(chunk))
        ))
    return found


# --- writes ----------------------------------------------------------------------------------


def serialize_on(conn: Connection, key: str) -> None:
    """Hold a lock on ``key`` until the transaction ends (PostgreSQL; SQLite writes are serial).

    Conditional creates and updates search, then write: two at once with the same criteria would
    both find nothing and both create. Whoever comes second waits here, then searches again in a
    statement that sees the first one's commit."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))


def lock_current(conn: Connection, keys: list[tuple[str, str]]) -> None:
    """Lock the current rows of ``keys`` in one fixed order (type, id), before a transaction
    updates or deletes them in the order of its entries: two transactions over the same resources
    then queue instead of deadlocking."""
    if conn.dialect.name != "postgresql" or not keys:
        return
    wanted = sorted(set(keys))
    for start in range(0, len(wanted), 500):
        conn.execute(
            select(resources.c.pk)
            .where(tuple_(resources.c.res_type, resources.c.res_id).in_(wanted[start:start + 500]))
            .order_by(resources.c.res_type, resources.c.res_id)
            .with_for_update()
        ).all()


def _next_moment(previous: datetime | None) -> datetime:
    """Now, but strictly after the previous version so history order is total."""
    now = datetime.now(UTC)
    if previous is not None and now <= previous:
        now = previous + timedelta(microseconds=1)
    return now


def _history_row(stored: Stored) -> tuple:
    """The history row of a version, as a batch for ``fhirfus.db.rows.write``."""
    return (resource_history, [{
        "res_type": stored.res_type, "res_id": stored.res_id, "version": stored.version,
        "last_updated": stored.last_updated, "method": stored.method, "content": stored.content,
        "site": stored.site,
    }])


@cache
def _insert_current(dialect: str) -> Any:
    """INSERT into ``resources`` that skips (instead of failing on) an id taken concurrently and
    returns the new key; built once per dialect, the row given as parameters."""
    dialect_insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return dialect_insert(resources).on_conflict_do_nothing(index_elements=["res_type", "res_id"]).returning(
        resources.c.pk)


def create(conn: Connection, res_type: str, res_id: str, content: dict, method: str = "POST") -> Stored:
    """Insert a brand-new resource (version 1), owned by the site of its label. Raises Conflict if
    the id is taken meanwhile."""
    moment = _next_moment(None)
    body = stamp(content, res_id, 1, moment)
    site = site_label(body)
    pk = rows.insert_returning(conn, _insert_current(conn.dialect.name), {
        "res_type": res_type, "res_id": res_id, "version": 1, "last_updated": moment, "deleted": False,
        "content": body, "site": site})
    if pk is None:
        raise Conflict(f"{res_type}/{res_id} was created concurrently; retry", f"{res_type}.id")
    stored = Stored(res_type, res_id, 1, moment, False, body, method, pk, site)
    indexer.index_resource(conn, pk, res_type, body, fresh=True, also=[_history_row(stored)])
    _written(conn, stored)
    return stored


@dataclass(frozen=True)
class NewResource:
    res_type: str
    res_id: str
    content: dict
    method: str = "POST"


def create_many(conn: Connection, items: list[NewResource]) -> list[Stored]:
    """Bulk create (Bundles, loads): one multi-row INSERT per table instead of one per resource."""
    if not items:
        return []
    moment = _next_moment(None)
    bodies = [stamp(item.content, item.res_id, 1, moment) for item in items]
    sites = [site_label(body) for body in bodies]
    current = [
        {"res_type": i.res_type, "res_id": i.res_id, "version": 1, "last_updated": moment, "deleted": False,
         "content": body, "site": site}
        for i, body, site in zip(items, bodies, sites, strict=True)
    ]
    try:  # no savepoint: a failed insert ends the whole write transaction, whose rollback undoes it
        pks = rows.insert_with_keys(conn, resources, current)
    except IntegrityError as exc:
        raise Conflict("A resource id of this batch was created concurrently; retry") from exc
    stored = [
        Stored(i.res_type, i.res_id, 1, moment, False, body, i.method, pk, site)
        for i, body, pk, site in zip(items, bodies, pks, sites, strict=True)
    ]
    history = (resource_history, [_history_row(s)[1][0] for s in stored])
    indexer.index_many(conn, [(s.pk, s.res_type, s.content) for s in stored], also=[history])  # type: ignore[misc]
    _written(conn, *stored)
    return stored


def replace(conn: Connection, previous: Stored, content: dict, method: str = "PUT") -> Stored:
    """Write a new version over ``previous`` (which must come from ``current(for_update=True)``).

    The owner's site label is kept (added when ``content`` leaves it out; another site's is a 422).
    An id of no site takes the site of ``content``'s label, and all its versions go with it."""
    moment = _next_moment(previous.last_updated)
    new_version = previous.version + 1
    site = previous.site or site_label(content)
    body = stamp(with_site_label(content, site), previous.res_id, new_version, moment)
    _guarded_update(conn, previous, new_version, moment, False, body, site)
    if site != previous.site:
        conn.execute(update(resource_history).where(
            resource_history.c.res_type == previous.res_type, resource_history.c.res_id == previous.res_id,
            resource_history.c.site.is_(None),
        ).values(site=site))
    stored = Stored(previous.res_type, previous.res_id, new_version, moment, False, body, method, previous.pk, site)
    assert previous.pk is not None
    indexer.index_resource(
        conn, previous.pk, previous.res_type, body, previous=previous.content, also=[_history_row(stored)]
    )
    _written(conn, stored)
    return stored


def tombstone(conn: Connection, previous: Stored) -> Stored:
    """Delete: a new version without content; index rows go away."""
    moment = _next_moment(previous.last_updated)
    new_version = previous.version + 1
    _guarded_update(conn, previous, new_version, moment, True, None, previous.site)
    stored = Stored(previous.res_type, previous.res_id, new_version, moment, True, None, "DELETE", previous.pk,
                    previous.site)
    assert previous.pk is not None
    indexer.remove_resource(conn, previous.pk, previous.res_type, previous.content, also=[_history_row(stored)])
    _written(conn, stored)
    return stored


def _guarded_update(
    conn: Connection, previous: Stored, new_version: int, moment: datetime, deleted: bool, body: dict | None,
    site: str | None,
) -> None:
    result = conn.execute(
        update(resources)
        .where(resources.c.pk == previous.pk, resources.c.version == previous.version)
        .values(version=new_version, last_updated=moment, deleted=deleted, content=body, site=site)
    )
    if result.rowcount != 1:
        raise Conflict(
            f"{previous.res_type}/{previous.res_id} changed concurrently (expected version {previous.version})"
        )


# --- history ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryCursor:
    """Keyset position: entries strictly older than this one come next (no OFFSET drift)."""

    last_updated: datetime
    res_type: str
    res_id: str
    version: int


def history(
    conn: Connection,
    seen_by: Visibility,
    *,
    res_type: str | None = None,
    res_id: str | None = None,
    since: datetime | None = None,
    at_or_before: datetime | None = None,
    after: HistoryCursor | None = None,
    count: int = 50,
) -> tuple[list[Stored], int, bool]:
    """One page of history (newest first), the total number of matching versions, more pages?"""
    h = resource_history
    conditions = [seen_by.rows_of(h)]
    if res_type is not None:
        conditions.append(h.c.res_type == res_type)
    if res_id is not None:
        conditions.append(h.c.res_id == res_id)
    if since is not None:
        conditions.append(h.c.last_updated >= since)
    if at_or_before is not None:
        conditions.append(h.c.last_updated <= at_or_before)
    total = conn.execute(select(func.count()).select_from(h).where(and_(True, *conditions))).scalar_one()
    page_conditions = list(conditions)
    if after is not None:
        page_conditions.append(
            or_(
                h.c.last_updated < after.last_updated,
                and_(
                    h.c.last_updated == after.last_updated,
                    tuple_(h.c.res_type, h.c.res_id, h.c.version)
                    < tuple_(after.res_type, after.res_id, after.version),
                ),
            )
        )
    rows = conn.execute(
        select(h)
        .where(and_(True, *page_conditions))
        .order_by(h.c.last_updated.desc(), h.c.res_type.desc(), h.c.res_id.desc(), h.c.version.desc())
        .limit(count + 1)
    ).all()
    has_more = len(rows) > count
    rows = rows[:count]
    entries = [
        Stored(r.res_type, r.res_id, r.version, r.last_updated, r.method == "DELETE", r.content, r.method, site=r.site)
        for r in rows
    ]
    return entries, total, has_more
