"""The audit writer: records reach the database through a writer process, none is lost."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from conftest import Database
from sqlalchemy import select

from fhirfus.auth.audit import AuditRecord, AuditWriter
from fhirfus.db import migrate
from fhirfus.db.tables import resources
from fhirfus.store.repository import Store


def _record(marker: str) -> AuditRecord:
    return AuditRecord("client-x", "admin", None, "GET", f"/fhir/Patient/{marker}", "", 200, "127.0.0.1",
                       datetime.now(UTC))


def _audited(database: Database) -> int:
    """How many requests the stored AuditEvents tell (one entity each)."""
    with database.engine.connect() as conn:
        events = conn.execute(select(resources.c.content).where(resources.c.res_type == "AuditEvent")).scalars()
        return sum(len(event["entity"]) for event in events)


def test_stop_writes_every_queued_record(fresh_database: Database) -> None:
    migrate.upgrade(fresh_database.engine)
    writer = AuditWriter(Store(fresh_database.engine))
    for _ in range(1_234):
        writer.record(_record(str(uuid.uuid4())))
    writer.stop()
    assert _audited(fresh_database) == 1_234


def test_flush_waits_until_the_records_are_stored(fresh_database: Database) -> None:
    migrate.upgrade(fresh_database.engine)
    writer = AuditWriter(Store(fresh_database.engine))
    try:
        for _ in range(7):
            writer.record(_record(str(uuid.uuid4())))
        writer.flush()
        assert _audited(fresh_database) == 7
    finally:
        writer.stop()


def test_a_dead_writer_process_is_replaced(fresh_database: Database) -> None:
    migrate.upgrade(fresh_database.engine)
    writer = AuditWriter(Store(fresh_database.engine))
    try:
        writer.record(_record("first"))
        writer.flush()
        assert writer.process is not None
        writer.process.kill()
        writer.process.join(timeout=10)
        writer.record(_record("second"))
        writer.flush()
        assert _audited(fresh_database) == 2
    finally:
        writer.stop()


def test_requests_of_one_client_kind_and_outcome_share_an_event() -> None:
    from fhirfus.auth.audit import grouped_events

    reads = [_record(f"p{n}") for n in range(250)]
    refused = AuditRecord("client-x", "admin", None, "GET", "/fhir/Patient/z", "", 404, "127.0.0.1", datetime.now(UTC))
    other = AuditRecord("client-y", "admin", None, "GET", "/fhir/Patient/y", "_id=1", 200, "127.0.0.1", datetime.now(UTC))
    events = grouped_events([*reads, refused, other], most=100)
    assert [len(e["entity"]) for e in events] == [100, 100, 50, 1, 1]
    assert events[0]["entity"][0]["what"] == {"reference": "Patient/p0"} and "period" in events[0]
    assert events[3]["outcome"] == "4" and "period" not in events[3]
    assert events[4]["agent"][0]["altId"] == "client-y" and events[4]["entity"][0]["query"]
