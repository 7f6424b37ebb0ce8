"""The durable notification queue (``subscription_queue``).

Order: a Subscription's notifications are leased in batches from its head row (the lowest ``pk``)
up to the first one that is not due, so a failed notification waiting for its retry holds back
everything queued after it (version 2 of a resource never arrives before version 1); within a
batch the worker keeps the order of each resource's versions. Concurrency: a process takes a head with a lease
(``owner``, ``lease_until``); another process takes it only once the lease ran out (the first one
died or hung), which may deliver it twice — at least once, never zero times.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Row, Select, delete, func, insert, or_, select, update

from fhirfus.db.tables import subscription_queue as q
from fhirfus.store.repository import Store


@dataclass(frozen=True)
class Queued:
    pk: int
    subscription_id: str
    res_type: str
    res_id: str
    version: int
    created: datetime
    attempts: int

    @classmethod
    def from_row(cls, row: Row) -> Queued:
        return cls(row.pk, row.subscription_id, row.res_type, row.res_id, row.version, row.created, row.attempts)


def enqueue(conn: Connection, rows: list[tuple[str, str, str, int]], moment: datetime) -> None:
    """Queue (subscription id, type, id, version) notifications, in this order, in ``conn``'s transaction."""
    if rows:
        conn.execute(insert(q), [
            {"subscription_id": sid, "res_type": res_type, "res_id": res_id, "version": version, "created": moment,
             "due": moment, "attempts": 0} for sid, res_type, res_id, version in rows])


def _heads() -> Select:
    return select(func.min(q.c.pk)).group_by(q.c.subscription_id)


def ready(store: Store, moment: datetime) -> list[str]:
    """Subscriptions whose head notification is due and taken by nobody."""
    with store.reading() as conn:
        return list(conn.execute(
            select(q.c.subscription_id).where(
                q.c.pk.in_(_heads()), q.c.due <= moment,
                or_(q.c.lease_until.is_(None), q.c.lease_until < moment))).scalars())


def take_batch(store: Store, subscription_id: str, owner: str, moment: datetime, lease_until: datetime,
               limit: int) -> list[Queued]:
    """Lease up to ``limit`` notifications of a Subscription from its head on, up to the first that
    is not due or not free (none unless the head is due and free), oldest first. The rows are locked while they are leased (PostgreSQL; SQLite
    writes are serial), so two processes never lease overlapping batches."""
    with store.writing() as conn:
        rows = conn.execute(select(q).where(q.c.subscription_id == subscription_id).order_by(q.c.pk).limit(limit)
                            .with_for_update()).all()
        if not rows or rows[0].due > moment:
            return []
        free = []
        for row in rows:
            if row.due > moment or (row.lease_until is not None and row.lease_until >= moment):
                break
            free.append(row)
        if not free or free[0].pk != rows[0].pk:
            return []
        conn.execute(update(q).where(q.c.pk.in_([row.pk for row in free])).values(owner=owner, lease_until=lease_until))
        return [Queued.from_row(row) for row in free]


def delivered(store: Store, pks: list[int], owner: str) -> None:
    if pks:
        with store.writing() as conn:
            conn.execute(delete(q).where(q.c.pk.in_(pks), q.c.owner == owner))


def failed(store: Store, pk: int, owner: str, attempts: int, due: datetime, error: str) -> None:
    """Record a failed delivery: handed back, to be tried again at ``due``."""
    with store.writing() as conn:
        conn.execute(update(q).where(q.c.pk == pk, q.c.owner == owner).values(
            attempts=attempts, due=due, error=error[:2000], owner=None, lease_until=None))


def release(store: Store, pks: list[int], owner: str) -> None:
    """Hand notifications back untried."""
    if pks:
        with store.writing() as conn:
            conn.execute(update(q).where(q.c.pk.in_(pks), q.c.owner == owner).values(owner=None, lease_until=None))


def drop_subscription(store: Store, subscription_id: str) -> None:
    """Forget the notifications of a Subscription that no longer exists."""
    with store.writing() as conn:
        conn.execute(delete(q).where(q.c.subscription_id == subscription_id))


def waiting(store: Store, subscription_id: str | None = None) -> int:
    """How many notifications wait (of one Subscription, or all)."""
    statement = select(func.count()).select_from(q)
    if subscription_id is not None:
        statement = statement.where(q.c.subscription_id == subscription_id)
    with store.reading() as conn:
        return int(conn.execute(statement).scalar_one())
