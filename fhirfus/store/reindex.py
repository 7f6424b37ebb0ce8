"""Rebuild search-index rows (after search-parameter definitions change)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, func, select

from fhirfus.db.tables import INDEX_TABLES
from fhirfus.db.visibility import EVERYTHING
from fhirfus.search import index as indexer
from fhirfus.store.repository import Store

CHUNK = 500


def count_live(store: Store, res_type: str | None = None) -> int:
    resources = EVERYTHING.resources()
    with store.reading() as conn:
        query = select(func.count()).select_from(resources).where(resources.c.deleted.is_(False))
        if res_type:
            query = query.where(resources.c.res_type == res_type)
        return conn.execute(query).scalar_one()


def reindex(store: Store, res_type: str | None = None, progress: Callable[[int], None] | None = None) -> int:
    """Re-extract the index rows of every live resource (of ``res_type``), chunk by chunk.

    Each chunk is one transaction: searches keep working meanwhile, and an interrupted run can
    simply be started again.
    """
    done = 0
    after = 0
    resources = EVERYTHING.resources()
    while True:
        with store.writing() as conn:
            query = select(resources.c.pk, resources.c.res_type, resources.c.content).where(
                resources.c.deleted.is_(False), resources.c.pk > after
            )
            if res_type:
                query = query.where(resources.c.res_type == res_type)
            rows = conn.execute(query.order_by(resources.c.pk).limit(CHUNK)).all()
            if not rows:
                return done
            pks = [r.pk for r in rows]
            for table in INDEX_TABLES:
                conn.execute(delete(table).where(table.c.resource_pk.in_(pks)))
            indexer.index_many(conn, [(r.pk, r.res_type, r.content) for r in rows])
        after = pks[-1]
        done += len(rows)
        if progress:
            progress(len(rows))
