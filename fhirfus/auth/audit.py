"""The audit trail: an AuditEvent for every request the auth gate saw (allowed or refused).

Events are queued by the request and written in batches by one background thread (bulk inserts
through the repository), so auditing adds no database round trip to a read. They are ordinary
AuditEvent resources: durable, versioned, and searchable by admin clients (``altid`` = client id,
``date``, ``outcome``, ``entity``, ``subtype``). Queries are kept in ``entity.query`` — inside the
database, never in application logs.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhirfus.auth.access import Access
from fhirfus.store import repository
from fhirfus.store.repository import NewResource, Store, format_instant

log = logging.getLogger("fhirfus.audit")
ACTIONS = {"GET": "R", "HEAD": "R", "POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}
BATCH = 500


@dataclass(frozen=True)
class AuditRecord:
    client_id: str | None
    role: str | None
    site: str | None
    method: str
    path: str
    query: str
    status: int
    address: str | None
    moment: datetime

    @classmethod
    def of(cls, access: Access | None, scope: Any, status: int) -> AuditRecord:
        client = scope.get("client") or (None, None)
        return cls(
            access.client_id if access else None, access.role if access else None, access.site if access else None,
            scope.get("method", ""), scope.get("path", ""), (scope.get("query_string") or b"").decode(),
            status, client[0], datetime.now(UTC),
        )


def _subtype(method: str, parts: list[str]) -> str:
    if parts and parts[-1].startswith("$"):
        return "operation"
    if method == "POST":
        return "create" if len(parts) == 1 else ("batch" if not parts else "search-type")
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete"
    if "_history" in parts:
        return "vread" if parts[-1] != "_history" else "history-instance"
    return "read" if len(parts) == 2 else "search-type"


def audit_event(record: AuditRecord) -> dict:
    parts = [p for p in record.path.removeprefix("/fhir").split("/") if p]
    outcome = "0" if record.status < 400 else ("4" if record.status < 500 else "8")
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                             "code": "datacollector" if record.role == "site" else "humanuser"}]},
        "requestor": True,
        "altId": record.client_id or "anonymous",
        "who": {"display": f"client {record.client_id}" if record.client_id else "unauthenticated caller"},
    }
    if record.address:
        agent["network"] = {"address": record.address, "type": "2"}
    entity: dict[str, Any] = {"description": f"{record.method} {record.path}"}
    if len(parts) >= 2 and not parts[1].startswith(("_", "$")):
        entity["what"] = {"reference": f"{parts[0]}/{parts[1]}"}
    if record.query:
        entity["query"] = base64.b64encode(record.query.encode()).decode()
    return {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": _subtype(record.method, parts)}],
        "action": ACTIONS.get(record.method, "E"),
        "recorded": format_instant(record.moment),
        "outcome": outcome,
        "outcomeDesc": f"HTTP {record.status}",
        "agent": [agent],
        "source": {"observer": {"display": "fhirfus"}, "site": record.site or "fhirfus"},
        "entity": [entity],
    }


class AuditWriter:
    """Queue + one writer thread; ``flush()`` waits until everything queued so far is stored."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: queue.Queue[AuditRecord | None] = queue.Queue()
        self.thread: threading.Thread | None = None
        self.pending = 0
        self.done = threading.Condition()

    def record(self, record: AuditRecord) -> None:
        if self.thread is None:
            self.start()
        with self.done:
            self.pending += 1
        self.queue.put(record)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="fhirfus-audit", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < BATCH:
                try:
                    item = self.queue.get(timeout=0.05)
                except queue.Empty:
                    break
                if item is None:
                    self._write(batch)
                    return
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[AuditRecord]) -> None:
        try:
            with self.store.writing() as conn:
                repository.create_many(conn, [NewResource("AuditEvent", str(uuid.uuid4()), audit_event(r)) for r in batch])
        except Exception:  # noqa: BLE001 - auditing must never take the server down; the failure is logged
            log.exception("could not write %d audit events", len(batch))
        finally:
            with self.done:
                self.pending -= len(batch)
                self.done.notify_all()

    def flush(self, timeout: float = 10.0) -> None:
        with self.done:
            self.done.wait_for(lambda: self.pending == 0, timeout=timeout)

    def stop(self) -> None:
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join(timeout=10)
            self.thread = None
