"""The audit writer: records reach the database through a writer process, none is lost."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select

from conftest import Database
from fhirfus.auth.audit import AuditRecord, AuditWriter
from fhirfus.store import migrate
from fhirfus.store.repository import Store
from fhirfus.store.tables import resources


def _record(marker: str) -> AuditRecord:
    return AuditRecord("client-x", "admin", None, "GET", f"/fhir/Patient/{marker}", "", 200, "127.0.0.1",
                       datetime.now(UTC))


def _audit_events(database: Database) -> int:
    with database.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(resources).where(resources.c.res_type == "AuditEvent")
        ).scalar_one()


def test_stop_writes_every_queued_record(fresh_database: Database) -> None:
    migrate.upgrade(fresh_database.engine)
    writer = AuditWriter(Store(fresh_database.engine))
    for _ in range(1_234):
        writer.record(_record(str(uuid.uuid4())))
    writer.stop()
    assert _audit_events(fresh_database) == 1_234


def test_flush_waits_until_the_records_are_stored(fresh_database: Database) -> None:
    migrate.upgrade(fresh_database.engine)
    writer = AuditWriter(Store(fresh_database.engine))
    try:
        for _ in range(7):
            writer.record(_record(str(uuid.uuid4())))
        writer.flush()
        assert _audit_events(fresh_database) == 7
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
        assert _audit_events(fresh_database) == 2
    finally:
        writer.stop()
