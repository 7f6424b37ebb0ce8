"""Import jobs in the database, the only state shared between server processes.

A job goes ``queued`` → ``running`` → ``completed`` | ``failed``; ``cancelled`` marks one a client
deleted. As for exports (``fhirfus.bulk.jobs``), the owning process beats ``heartbeat`` and every
state change is an UPDATE guarded by owner and status. Unlike an export, an adopted import does
not start over: ``progress`` (phase, input, next line, counts) is written in the transaction of
each committed chunk, together with that chunk's line errors, so the job resumes at the first line
no commit covered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, case, delete, func, insert, or_, select, update

from fhirfus.auth.access import Access
from fhirfus.auth.scopes import Grant
from fhirfus.db.tables import import_errors, import_jobs
from fhirfus.fhir.validation import valid_id
from fhirfus.store.repository import Store

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "queued", "running", "completed", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
FETCH, LOAD, DONE = "fetch", "load", "done"


class Stopped(Exception):
    """The job is no longer ours: cancelled, or adopted by another process (the chunk rolls back)."""


@dataclass(frozen=True)
class ImportJob:
    id: str
    status: str
    client_id: str
    role: str
    site: str | None
    scopes: str
    request: dict
    progress: dict
    error: str | None
    attempts: int
    owner: str | None
    heartbeat: datetime
    directory: str | None
    created: datetime
    updated: datetime
    expires: datetime | None

    @classmethod
    def from_row(cls, row: Row) -> ImportJob:
        return cls(row.id, row.status, row.client_id, row.role, row.site, row.scopes, row.request, row.progress,
                   row.error, row.attempts, row.owner, row.heartbeat, row.directory, row.created, row.updated,
                   row.expires)

    @property
    def caller(self) -> Access:
        """The requester as it was at kick-off (role, site, scopes), for the job's writes."""
        return Access(self.client_id, self.role, self.site, grants_of(self.scopes))


def scopes_text(grants: Sequence[Grant]) -> str:
    return " ".join(f"{g.res_type}:{g.permissions}" for g in grants)


def grants_of(text: str) -> tuple[Grant, ...]:
    return tuple(Grant(*item.split(":", 1)) for item in text.split())


def now() -> datetime:
    return datetime.now(UTC)


def initial_progress(inputs: int, phase: str) -> dict:
    return {"phase": phase, "input": 0, "line": 0, "chunks": 0,
            "inputs": [{"read": 0, "loaded": 0, "errors": 0} for _ in range(inputs)]}


def create(store: Store, job_id: str, caller: Access, request: dict, directory: str, owner: str, phase: str) -> None:
    moment = now()
    with store.writing() as conn:
        conn.execute(insert(import_jobs).values(
            id=job_id, status=QUEUED, client_id=caller.client_id, role=caller.role, site=caller.site,
            scopes=scopes_text(caller.grants), request=request,
            progress=initial_progress(len(request["inputs"]), phase), attempts=0, owner=owner, heartbeat=moment,
            directory=directory, created=moment, updated=moment))


def get(store: Store, job_id: str) -> ImportJob | None:
    if not valid_id(job_id):
        return None
    with store.reading() as conn:
        row = conn.execute(select(import_jobs).where(import_jobs.c.id == job_id)).first()
    return ImportJob.from_row(row) if row is not None else None


def count_active(store: Store, owner: str) -> int:
    with store.reading() as conn:
        return conn.execute(select(func.count()).select_from(import_jobs).where(
            import_jobs.c.owner == owner, import_jobs.c.status.in_(ACTIVE))).scalar_one()


def start(store: Store, job_id: str, owner: str) -> ImportJob | None:
    """queued → running for its owner, progress kept (None: cancelled or taken over meanwhile)."""
    moment = now()
    with store.writing() as conn:
        result = conn.execute(
            update(import_jobs)
            .where(import_jobs.c.id == job_id, import_jobs.c.owner == owner, import_jobs.c.status == QUEUED)
            .values(status=RUNNING, attempts=import_jobs.c.attempts + 1, heartbeat=moment, updated=moment))
    return get(store, job_id) if result.rowcount == 1 else None


def _ours(job_id: str, owner: str) -> Any:
    return (import_jobs.c.id == job_id) & (import_jobs.c.owner == owner) & (import_jobs.c.status == RUNNING)


def beat(store: Store, job_id: str, owner: str) -> bool:
    """Refresh the heartbeat; False when the job is no longer ours."""
    moment = now()
    with store.writing() as conn:
        return conn.execute(update(import_jobs).where(_ours(job_id, owner))
                            .values(heartbeat=moment, updated=moment)).rowcount == 1


def commit_progress(conn: Connection, job_id: str, owner: str, progress: dict,
                    errors: Sequence[tuple[int, int, dict]] = (), request: dict | None = None) -> None:
    """In the caller's transaction: the new progress and the line errors (input, line, outcome);
    raises ``Stopped`` (rolling the transaction back) when the job is no longer ours."""
    moment = now()
    values: dict[str, Any] = {"progress": progress, "heartbeat": moment, "updated": moment}
    if request is not None:
        values["request"] = request
    if conn.execute(update(import_jobs).where(_ours(job_id, owner)).values(**values)).rowcount != 1:
        raise Stopped
    if errors:
        conn.execute(insert(import_errors), [{"job_id": job_id, "input": i, "line": n, "outcome": o}
                                             for i, n, o in errors])


def complete(store: Store, job_id: str, owner: str, expires: datetime) -> bool:
    moment = now()
    with store.writing() as conn:
        return conn.execute(update(import_jobs).where(_ours(job_id, owner)).values(
            status=COMPLETED, heartbeat=moment, updated=moment, expires=expires)).rowcount == 1


def fail(store: Store, job_id: str, owner: str, message: str, expires: datetime) -> bool:
    moment = now()
    with store.writing() as conn:
        return conn.execute(
            update(import_jobs)
            .where(import_jobs.c.id == job_id, import_jobs.c.owner == owner, import_jobs.c.status.in_(ACTIVE))
            .values(status=FAILED, error=message, heartbeat=moment, updated=moment, expires=expires)).rowcount == 1


def errors_of(store: Store, job_id: str, input_index: int) -> Iterator[dict]:
    with store.reading() as conn:
        rows = conn.execute(select(import_errors.c.outcome)
                            .where(import_errors.c.job_id == job_id, import_errors.c.input == input_index)
                            .order_by(import_errors.c.line)).all()
    for row in rows:
        yield row.outcome


def cancel(store: Store, job_id: str) -> ImportJob | None:
    """Mark a job cancelled (the job as it was before; None if unknown or already cancelled)."""
    job = get(store, job_id)
    if job is None or job.status == CANCELLED:
        return None
    with store.writing() as conn:
        result = conn.execute(update(import_jobs).where(import_jobs.c.id == job_id,
                                                        import_jobs.c.status == job.status)
                              .values(status=CANCELLED, updated=now()))
    return job if result.rowcount == 1 else cancel(store, job_id)


def remove(store: Store, job_id: str) -> None:
    with store.writing() as conn:
        conn.execute(delete(import_errors).where(import_errors.c.job_id == job_id))
        conn.execute(delete(import_jobs).where(import_jobs.c.id == job_id))


def release_all(store: Store, owner: str) -> None:
    """Hand the owner's active jobs back on shutdown (queued, unowned: any process resumes them)."""
    interrupted = (import_jobs.c.status == RUNNING) & (import_jobs.c.attempts > 0)
    with store.writing() as conn:
        conn.execute(update(import_jobs)
                     .where(import_jobs.c.owner == owner, import_jobs.c.status.in_(ACTIVE))
                     # an orderly shutdown is not a failed attempt
                     .values(status=QUEUED, owner=None, updated=now(),
                             attempts=case((interrupted, import_jobs.c.attempts - 1), else_=import_jobs.c.attempts)))


def orphans(store: Store, lease: timedelta) -> list[ImportJob]:
    """Active jobs nobody owns, or whose owner stopped beating (a dead process)."""
    with store.reading() as conn:
        rows = conn.execute(
            select(import_jobs)
            .where(import_jobs.c.status.in_(ACTIVE),
                   or_(import_jobs.c.owner.is_(None), import_jobs.c.heartbeat < now() - lease))
            .order_by(import_jobs.c.created)).all()
    return [ImportJob.from_row(r) for r in rows]


def adopt(store: Store, job: ImportJob, owner: str) -> bool:
    """Take over an orphan (guarded by the state it was seen in), queued to resume."""
    moment = now()
    owner_matches = import_jobs.c.owner.is_(None) if job.owner is None else import_jobs.c.owner == job.owner
    with store.writing() as conn:
        return conn.execute(
            update(import_jobs)
            .where(import_jobs.c.id == job.id, import_jobs.c.status == job.status, owner_matches,
                   import_jobs.c.heartbeat == job.heartbeat)
            .values(status=QUEUED, owner=owner, heartbeat=moment, updated=moment)).rowcount == 1


def finished_before(store: Store, moment: datetime, lease: timedelta) -> list[ImportJob]:
    """Jobs that can go: expired ones, and cancelled ones nobody is working on any more."""
    with store.reading() as conn:
        rows = conn.execute(select(import_jobs).where(or_(
            import_jobs.c.expires < moment,
            (import_jobs.c.status == CANCELLED) & (import_jobs.c.updated < moment - lease)))).all()
    return [ImportJob.from_row(r) for r in rows]
