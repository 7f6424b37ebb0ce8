"""Export jobs in the database: the only shared state between server processes.

A job goes ``queued`` → ``running`` → ``completed`` | ``failed``; ``cancelled`` marks a job a
client deleted whose files still have to be removed. The process that owns a job (``owner``)
refreshes ``heartbeat`` while it works on it; every state change is a guarded UPDATE (expected
owner and status in the WHERE clause), so two processes can never both run, finish or adopt the
same job, and a worker notices a cancellation as a heartbeat that matches no row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Row, case, delete, func, insert, or_, select, update

from fhirfus.bulk.params import ExportRequest
from fhirfus.bulk.writer import WrittenFile
from fhirfus.db.tables import export_files, export_job_matches, export_job_patients, export_jobs
from fhirfus.fhir.validation import valid_id
from fhirfus.store.repository import Store

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "queued", "running", "completed", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    request: ExportRequest
    request_url: str
    transaction_time: datetime | None
    progress: int
    percent: int
    error: str | None
    attempts: int
    owner: str | None
    heartbeat: datetime
    directory: str | None
    created: datetime
    updated: datetime
    expires: datetime | None

    @classmethod
    def from_row(cls, row: Row) -> Job:
        return cls(
            row.id, row.status, ExportRequest.from_json(row.params), row.request_url, row.transaction_time,
            row.progress, row.percent, row.error, row.attempts, row.owner, row.heartbeat, row.directory, row.created,
            row.updated, row.expires,
        )


def now() -> datetime:
    return datetime.now(UTC)


def create(store: Store, job_id: str, request: ExportRequest, request_url: str, owner: str) -> Job:
    moment = now()
    with store.writing() as conn:
        conn.execute(
            insert(export_jobs).values(
                id=job_id, level=request.level, group_id=request.group_id, status=QUEUED, request_url=request_url,
                params=request.to_json(), progress=0, percent=0, attempts=0, owner=owner, heartbeat=moment, created=moment,
                updated=moment,
            )
        )
    job = get(store, job_id)
    assert job is not None
    return job


def get(store: Store, job_id: str) -> Job | None:
    """The job, or None for an unknown id (also one no job can have, like ``a%00b``: never looked up)."""
    if not valid_id(job_id):
        return None
    with store.reading() as conn:
        row = conn.execute(select(export_jobs).where(export_jobs.c.id == job_id)).first()
    return Job.from_row(row) if row is not None else None


def recent(store: Store, limit: int = 200) -> list[Job]:
    """The newest jobs, cancelled ones aside (what an admin watches)."""
    with store.reading() as conn:
        rows = conn.execute(select(export_jobs).where(export_jobs.c.status != CANCELLED)
                            .order_by(export_jobs.c.created.desc()).limit(limit)).all()
    return [Job.from_row(r) for r in rows]


def count_active(store: Store, owner: str) -> int:
    with store.reading() as conn:
        return conn.execute(
            select(func.count()).select_from(export_jobs).where(
                export_jobs.c.owner == owner, export_jobs.c.status.in_(ACTIVE)
            )
        ).scalar_one()


def files_of(store: Store, job_id: str) -> list[WrittenFile]:
    with store.reading() as conn:
        rows = conn.execute(
            select(export_files).where(export_files.c.job_id == job_id)
            .order_by(export_files.c.kind.desc(), export_files.c.res_type, export_files.c.seq)
        ).all()
    return [WrittenFile(r.name, r.kind, r.res_type, r.seq, r._mapping["count"], r.size) for r in rows]


def start(store: Store, job_id: str, owner: str, directory: str) -> Job | None:
    """queued → running for its owner (None: cancelled or taken over meanwhile)."""
    moment = now()
    with store.writing() as conn:
        result = conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id == job_id, export_jobs.c.owner == owner, export_jobs.c.status == QUEUED)
            .values(status=RUNNING, attempts=export_jobs.c.attempts + 1, heartbeat=moment, updated=moment,
                    directory=directory, progress=0, percent=0, transaction_time=None)
        )
    return get(store, job_id) if result.rowcount == 1 else None


def beat(store: Store, job_id: str, owner: str, progress: int, percent: int) -> bool:
    """Refresh a running job's heartbeat and progress; False when the job is no longer ours."""
    moment = now()
    with store.writing() as conn:
        result = conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id == job_id, export_jobs.c.owner == owner, export_jobs.c.status == RUNNING)
            .values(heartbeat=moment, updated=moment, progress=progress, percent=percent)
        )
    return result.rowcount == 1


def beat_queued(store: Store, owner: str) -> None:
    """Jobs waiting for a worker thread stay visibly alive."""
    moment = now()
    with store.writing() as conn:
        conn.execute(
            update(export_jobs).where(export_jobs.c.owner == owner, export_jobs.c.status == QUEUED)
            .values(heartbeat=moment)
        )


def complete(
    store: Store, job_id: str, owner: str, transaction_time: datetime, files: Sequence[WrittenFile],
    expires: datetime,
) -> bool:
    moment = now()
    with store.writing() as conn:
        result = conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id == job_id, export_jobs.c.owner == owner, export_jobs.c.status == RUNNING)
            .values(status=COMPLETED, transaction_time=transaction_time, heartbeat=moment, updated=moment,
                    expires=expires, progress=sum(f.count for f in files if f.kind == "output"), percent=100)
        )
        if result.rowcount != 1:
            return False
        _drop_staging(conn, job_id)
        if files:
            conn.execute(
                insert(export_files),
                [{"job_id": job_id, "name": f.name, "kind": f.kind, "res_type": f.res_type, "seq": f.seq,
                  "count": f.count, "size": f.size} for f in files],
            )
    return True


def fail(store: Store, job_id: str, owner: str, message: str, expires: datetime) -> bool:
    moment = now()
    with store.writing() as conn:
        result = conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id == job_id, export_jobs.c.owner == owner, export_jobs.c.status.in_(ACTIVE))
            .values(status=FAILED, error=message, heartbeat=moment, updated=moment, expires=expires)
        )
        _drop_staging(conn, job_id)
    return result.rowcount == 1


def _drop_staging(conn: Connection, job_id: str) -> None:
    """Staged patients and matches are only needed while the job runs."""
    conn.execute(delete(export_job_patients).where(export_job_patients.c.job_id == job_id))
    conn.execute(delete(export_job_matches).where(export_job_matches.c.job_id == job_id))


def release_all(store: Store, owner: str) -> None:
    """Give the owner's jobs back on shutdown: unowned and queued, so any process restarts them at once."""
    moment = now()
    interrupted = (export_jobs.c.status == RUNNING) & (export_jobs.c.attempts > 0)
    with store.writing() as conn:
        conn.execute(
            update(export_jobs)
            .where(export_jobs.c.owner == owner, export_jobs.c.status.in_(ACTIVE))
            # an orderly shutdown is not a failed attempt
            .values(status=QUEUED, owner=None, heartbeat=moment, updated=moment,
                    attempts=case((interrupted, export_jobs.c.attempts - 1), else_=export_jobs.c.attempts))
        )


def cancel(store: Store, job_id: str) -> Job | None:
    """Mark a job cancelled (the job as it was before; None if unknown or already cancelled)."""
    job = get(store, job_id)
    if job is None or job.status == CANCELLED:
        return None
    with store.writing() as conn:
        result = conn.execute(
            update(export_jobs).where(export_jobs.c.id == job_id, export_jobs.c.status == job.status)
            .values(status=CANCELLED, updated=now())
        )
    return job if result.rowcount == 1 else cancel(store, job_id)


def remove(store: Store, job_id: str) -> None:
    """Delete the job row (its files rows and staged patients go with it)."""
    with store.writing() as conn:
        conn.execute(delete(export_jobs).where(export_jobs.c.id == job_id))


def orphans(store: Store, lease: timedelta) -> list[Job]:
    """Active jobs nobody owns, or whose owner stopped beating (a dead process)."""
    stale = now() - lease
    with store.reading() as conn:
        rows = conn.execute(
            select(export_jobs)
            .where(export_jobs.c.status.in_(ACTIVE),
                   or_(export_jobs.c.owner.is_(None), export_jobs.c.heartbeat < stale))
            .order_by(export_jobs.c.created)
        ).all()
    return [Job.from_row(r) for r in rows]


def adopt(store: Store, job: Job, owner: str) -> bool:
    """Take over an orphan (guarded by the state it was seen in), queued for a fresh start."""
    moment = now()
    owner_matches = export_jobs.c.owner.is_(None) if job.owner is None else export_jobs.c.owner == job.owner
    with store.writing() as conn:
        result = conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id == job.id, export_jobs.c.status == job.status, owner_matches,
                   export_jobs.c.heartbeat == job.heartbeat)
            .values(status=QUEUED, owner=owner, heartbeat=moment, updated=moment)
        )
    return result.rowcount == 1


def finished_before(store: Store, moment: datetime, lease: timedelta) -> list[Job]:
    """Jobs whose files can go: expired ones, and cancelled ones nobody is working on any more."""
    with store.reading() as conn:
        rows = conn.execute(
            select(export_jobs).where(
                or_(
                    export_jobs.c.expires < moment,
                    (export_jobs.c.status == CANCELLED) & (export_jobs.c.updated < moment - lease),
                )
            )
        ).all()
    return [Job.from_row(r) for r in rows]
