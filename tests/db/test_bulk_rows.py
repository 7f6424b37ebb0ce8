"""A bulk create writes the same rows as one create at a time.

On PostgreSQL the two take different roads (``fhirfus.db.rows``): a single create goes in one
pipelined round trip (one INSERT for the rows of all tables), a bulk create by ``COPY`` (binary
for tables with timestamps, text for the others). Values at the edges of what each road must
carry (open Period ends, the first and last days of time, fractional seconds with zones,
decimals, accents) must come back the same either way.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from fhirfus.db import rows
from fhirfus.db.migrate import upgrade
from fhirfus.db.tables import INDEX_TABLES, resource_history, resources
from fhirfus.store import repository
from fhirfus.store.repository import NewResource, Store

EDGES = [
    {"resourceType": "Patient", "birthDate": "0001-01-01", "name": [{"family": "Müller-Łukasz", "given": ["Zoë"]}]},
    {"resourceType": "Patient", "birthDate": "9999-12-31", "active": False},
    {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "period": {"start": "2021-03-04"}},
    {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "period": {"end": "2021-03-04T10:00Z"}},
    {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "urn:x", "code": "a"}]},
     "effectiveDateTime": "2021-06-30T23:59:59.123456+14:00",
     "valueQuantity": {"value": 0.000123, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}},
    {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "urn:x", "code": "b"}]},
     "effectivePeriod": {"start": "1970", "end": "1970-02"}, "valueQuantity": {"value": 12345678901234.5678}},
    {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "urn:x", "code": "c"}]},
     "component": [{"code": {"coding": [{"system": "urn:x", "code": "d"}]}, "valueDateTime": "2020-02-29T12:00:00-05:00"}]},
]


def _rows(store: Store, res_ids: list[str]) -> dict[str, list[tuple]]:
    """Every row the resources left, without surrogate keys and write times."""
    with store.engine.connect() as conn:
        pks = dict(conn.execute(select(resources.c.pk, resources.c.res_id).where(resources.c.res_id.in_(res_ids))).all())
        found: dict[str, list[tuple]] = {}
        for table in INDEX_TABLES:
            columns = [c for c in table.c if c.name != "resource_pk"]
            rows = conn.execute(select(table.c.resource_pk, *columns).where(table.c.resource_pk.in_(pks))).all()
            found[table.name] = sorted((pks[r[0]], *r[1:]) for r in rows)
        history = conn.execute(select(resource_history.c.res_id, resource_history.c.content)
                               .where(resource_history.c.res_id.in_(res_ids))).all()
        found["history"] = sorted((r[0], sorted(k for k in r[1] if k != "meta")) for r in history)
    return found


def test_a_bulk_create_writes_the_rows_of_single_creates(fresh_database) -> None:
    upgrade(fresh_database.engine)
    store = Store(fresh_database.engine)
    copies = max(rows.COPY_FROM, rows.KEYED_COPY_FROM)  # enough rows per table for COPY in the bulk create
    singles = [(f"s{n}-{uuid.uuid4().hex[:6]}", r) for n, r in enumerate(EDGES * copies)]
    bulk = [(f"b{n}-{uuid.uuid4().hex[:6]}", r) for n, r in enumerate(EDGES * copies)]
    for res_id, resource in singles:
        with store.writing() as conn:
            repository.create(conn, resource["resourceType"], res_id, dict(resource))
    with store.writing() as conn:
        repository.create_many(conn, [NewResource(r["resourceType"], res_id, dict(r)) for res_id, r in bulk])

    def renamed(rows: dict[str, list[tuple]], prefix: str) -> dict[str, list[tuple]]:
        return {table: sorted((row[0].split("-")[0].removeprefix(prefix), *row[1:]) for row in values)
                for table, values in rows.items()}

    single_rows = renamed(_rows(store, [i for i, _ in singles]), "s")
    bulk_rows = renamed(_rows(store, [i for i, _ in bulk]), "b")
    assert sum(len(v) for v in single_rows.values()) > 100
    for table in single_rows:
        assert bulk_rows[table] == single_rows[table], table


def test_on_sqlite_the_driver_writes_store_what_sqlalchemy_would(tmp_path) -> None:
    """``rows.write`` on SQLite goes around SQLAlchemy's execution (one ``executemany`` per table,
    each value through its column's bind processor): every index row and history row it writes is
    stored exactly as SQLAlchemy's own INSERT stores it, value and SQLite storage class alike."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, text

    from fhirfus.db.engine import make_engine
    from fhirfus.search.extraction import extract_index_values
    from fhirfus.search.index import index_rows

    def batches(pk: int, resource: dict) -> list[rows.Batch]:
        moment = datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC)
        history = {"res_type": resource["resourceType"], "res_id": f"r{pk}", "version": 1, "last_updated": moment,
                   "content": {**resource, "id": f"r{pk}"}, "method": "POST", "site": None}
        return [(resource_history, [history]), *index_rows(pk, resource["resourceType"], extract_index_values(resource))]

    stored = []
    for way in ("driver", "sqlalchemy"):
        engine = make_engine(f"sqlite:///{tmp_path / way}.db")
        upgrade(engine)
        with engine.begin() as conn:
            for pk, resource in enumerate(EDGES, start=1):
                written = [(table, table_rows) for table, table_rows in batches(pk, resource) if table_rows]
                if way == "driver":
                    rows.write(conn, written)
                    continue
                for table, table_rows in written:
                    names = [c.name for c in table.c]
                    dicts = [r if isinstance(r, dict) else dict(zip(names, r, strict=True)) for r in table_rows]
                    conn.execute(insert(table), dicts)
        with engine.connect() as conn:
            found = {}
            for table in [resource_history, *INDEX_TABLES]:
                columns = ", ".join(f"{c.name}, typeof({c.name})" for c in table.c if c.name != "pk")
                found[table.name] = sorted(map(repr, conn.execute(text(f"SELECT {columns} FROM {table.name}")).all()))
        engine.dispose()
        stored.append(found)
    assert sum(len(v) for v in stored[0].values()) > 3 * len(EDGES)  # every kind of index row is there
    assert stored[0] == stored[1]
