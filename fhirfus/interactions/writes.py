"""The write transaction of an interaction: the caller's AuditEvent commits with what it wrote."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

from fhirfus.auth.access import Access
from fhirfus.store.repository import Store


@contextmanager
def write_transaction(
    store: Store, caller: Access, *, method: str | None = None, path: str | None = None,
) -> Iterator[Connection]:
    """One write transaction. When the caller is audited, its AuditEvent is written in the same
    transaction, so a committed write is never without its record (nor a record without its write).
    ``method``/``path``: what the record names when it is not the request itself (a batch entry)."""
    with store.writing() as conn:
        yield conn
        if caller.audit is not None:
            caller.audit.record_in(conn, method, path)
