"""Reindexing rebuilds exactly the rows the write path produced."""

from __future__ import annotations

import httpx

from fhirfus.db.tables import search_string
from fhirfus.store.reindex import reindex
from fhirfus.store.repository import Store


def test_reindex_restores_lost_index_rows(client: httpx.Client, server, unique: str) -> None:
    created = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": f"Re{unique}"}]}).json()
    engine = server.database.engine
    lookup = client.get(f"/Patient?family=Re{unique}").json()
    assert lookup["total"] == 1
    with engine.begin() as conn:
        conn.execute(search_string.delete().where(search_string.c.value.like(f"re{unique}%")))
    assert client.get(f"/Patient?family=Re{unique}").json()["total"] == 0
    reindex(Store(engine), "Patient")
    assert client.get(f"/Patient?family=Re{unique}").json()["total"] == 1
    assert client.get(f"/Patient/{created['id']}").status_code == 200
