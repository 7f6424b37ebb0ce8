"""Jobs in a database table, leased by one server process at a time: what export and import jobs share.

A job goes ``queued`` → ``running`` → ``completed`` | ``failed``; ``cancelled`` marks a job a client
deleted whose files still have to be removed. The process that owns a job (``owner``) refreshes
``heartbeat`` while it works on it; every state change is an UPDATE guarded by the expected owner
and status, so two processes can never both run, finish or adopt the same job, and a worker
notices a cancellation as a heartbeat that matches no row. A job whose owner stopped beating for
a lease is an orphan that any process may adopt (``fhirfus.bulk.jobworker``).

The columns this needs come from ``fhirfus.db.tables.job_table``; what a kind of job adds (an
export's files, an import's progress) stays with that kind, written through the same guards.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Self, TypeVar

from sqlalchemy import Connection, Row, Table, case, delete, func, insert, or_, select, update

from fhirfus.fhir.validation import valid_id
from fhirfus.store.repository import Store

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "queued", "running", "completed", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)


class Stopped(Exception):
    """The job is no longer ours to run: cancelled, or adopted by another process."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LeasedJob:
    """The columns every job table has (``db.tables.job_table``); a kind of job adds its own."""

    id: str
    status: str
    error: str | None
    attempts: int
    owner: str | None
    heartbeat: datetime
    directory: str | None
    created: datetime
    updated: datetime
    expires: datetime | None

    @classmethod
    def from_row(cls, row: Row, **given: Any) -> Self:
        """The job of a row: each field from the column of its name, unless ``given``."""
        return cls(**{f.name: row._mapping[f.name] for f in fields(cls) if f.name not in given}, **given)


J = TypeVar("J", bound=LeasedJob)


class JobTable(Generic[J]):
    """The life cycle of the jobs of one table, each UPDATE guarded by owner and status.

    ``job`` makes a job of a row; ``staging``: tables of rows (keyed by ``job_id``) that only a
    running job needs, deleted when it ends; ``clock`` gives every time written or compared
    (heartbeats, leases, expiry), so a test can move time instead of waiting for it. A kind of job
    subclasses this with what it adds."""

    def __init__(self, table: Table, job: Callable[[Row], J], *, staging: Sequence[Table] = (),
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.table = table
        self.job = job
        self.staging = tuple(staging)
        self.clock = clock

    def with_clock(self, clock: Callable[[], datetime]) -> Self:
        """The same table read and written on another clock."""
        clocked = copy.copy(self)
        clocked.clock = clock
        return clocked

    def now(self) -> datetime:
        return self.clock()

    # --- reads -----------------------------------------------------------------------------------

    def get(self, store: Store, job_id: str) -> J | None:
        """The job, or None for an unknown id (also one no job can have, like ``a%00b``: never looked up)."""
        if not valid_id(job_id):
            return None
        with store.reading() as conn:
            row = conn.execute(select(self.table).where(self.table.c.id == job_id)).first()
        return self.job(row) if row is not None else None

    def live(self, store: Store, job_id: str) -> J | None:
        """The job a client may still ask about: None when unknown, cancelled or expired."""
        job = self.get(store, job_id)
        if job is None or job.status == CANCELLED or (job.expires is not None and job.expires <= self.now()):
            return None
        return job

    def count_active(self, store: Store, owner: str) -> int:
        t = self.table
        with store.reading() as conn:
            return conn.execute(select(func.count()).select_from(t).where(
                t.c.owner == owner, t.c.status.in_(ACTIVE))).scalar_one()

    def orphans(self, store: Store, lease: timedelta) -> list[J]:
        """Active jobs nobody owns, or whose owner stopped beating (a dead process)."""
        t = self.table
        with store.reading() as conn:
            rows = conn.execute(
                select(t).where(t.c.status.in_(ACTIVE), or_(t.c.owner.is_(None), t.c.heartbeat < self.now() - lease))
                .order_by(t.c.created)).all()
        return [self.job(r) for r in rows]

    def finished_before(self, store: Store, moment: datetime, lease: timedelta) -> list[J]:
        """Jobs that can go: expired ones, and cancelled ones nobody is working on any more."""
        t = self.table
        with store.reading() as conn:
            rows = conn.execute(select(t).where(or_(
                t.c.expires < moment, (t.c.status == CANCELLED) & (t.c.updated < moment - lease)))).all()
        return [self.job(r) for r in rows]

    # --- the owner's transitions -----------------------------------------------------------------

    def insert(self, store: Store, job_id: str, owner: str, **values: Any) -> None:
        """A queued job of ``owner`` with the kind's own ``values``."""
        moment = self.now()
        with store.writing() as conn:
            conn.execute(insert(self.table).values(id=job_id, status=QUEUED, attempts=0, owner=owner, heartbeat=moment,
                                                   created=moment, updated=moment, **values))

    def begin(self, store: Store, job_id: str, owner: str, **values: Any) -> J | None:
        """queued → running for its owner, one attempt more (None: cancelled or taken over meanwhile)."""
        t = self.table
        moment = self.now()
        with store.writing() as conn:
            result = conn.execute(
                update(t).where(t.c.id == job_id, t.c.owner == owner, t.c.status == QUEUED)
                .values(status=RUNNING, attempts=t.c.attempts + 1, heartbeat=moment, updated=moment, **values))
        return self.get(store, job_id) if result.rowcount == 1 else None

    def ours(self, job_id: str, owner: str) -> Any:
        """The WHERE clause of a running job of ``owner``."""
        t = self.table
        return (t.c.id == job_id) & (t.c.owner == owner) & (t.c.status == RUNNING)

    def heartbeat_in(self, conn: Connection, job_id: str, owner: str, **values: Any) -> bool:
        """In the caller's transaction: refresh the heartbeat (and ``values``); False when no longer ours."""
        moment = self.now()
        return conn.execute(update(self.table).where(self.ours(job_id, owner))
                            .values(heartbeat=moment, updated=moment, **values)).rowcount == 1

    def heartbeat(self, store: Store, job_id: str, owner: str, **values: Any) -> bool:
        """Refresh a running job's heartbeat (and ``values``, its progress); False when no longer ours."""
        with store.writing() as conn:
            return self.heartbeat_in(conn, job_id, owner, **values)

    def beat_queued(self, store: Store, owner: str) -> None:
        """Jobs waiting for a worker thread stay visibly alive."""
        t = self.table
        with store.writing() as conn:
            conn.execute(update(t).where(t.c.owner == owner, t.c.status == QUEUED).values(heartbeat=self.now()))

    def finish(self, conn: Connection, job_id: str, owner: str, expires: datetime, **values: Any) -> bool:
        """In the caller's transaction (with what the kind records beside it): running → completed."""
        if not self.heartbeat_in(conn, job_id, owner, status=COMPLETED, expires=expires, **values):
            return False
        self._unstage(conn, job_id)
        return True

    def fail(self, store: Store, job_id: str, owner: str, message: str, expires: datetime) -> bool:
        """An active job of ``owner`` → failed with ``message``."""
        t = self.table
        moment = self.now()
        with store.writing() as conn:
            failed = conn.execute(
                update(t).where(t.c.id == job_id, t.c.owner == owner, t.c.status.in_(ACTIVE))
                .values(status=FAILED, error=message, heartbeat=moment, updated=moment, expires=expires)
            ).rowcount == 1
            self._unstage(conn, job_id)
        return failed

    def _unstage(self, conn: Connection, job_id: str) -> None:
        for staged in self.staging:
            conn.execute(delete(staged).where(staged.c.job_id == job_id))

    def release_all(self, store: Store, owner: str) -> None:
        """Give the owner's jobs back on shutdown: unowned and queued, so any process takes them at once."""
        t = self.table
        moment = self.now()
        interrupted = (t.c.status == RUNNING) & (t.c.attempts > 0)
        with store.writing() as conn:
            conn.execute(
                update(t).where(t.c.owner == owner, t.c.status.in_(ACTIVE))
                # an orderly shutdown is not a failed attempt
                .values(status=QUEUED, owner=None, heartbeat=moment, updated=moment,
                        attempts=case((interrupted, t.c.attempts - 1), else_=t.c.attempts)))

    def adopt(self, store: Store, job: J, owner: str) -> bool:
        """Take over an orphan (guarded by the state it was seen in), queued to run again."""
        t = self.table
        moment = self.now()
        owner_matches = t.c.owner.is_(None) if job.owner is None else t.c.owner == job.owner
        with store.writing() as conn:
            return conn.execute(
                update(t).where(t.c.id == job.id, t.c.status == job.status, owner_matches,
                                t.c.heartbeat == job.heartbeat)
                .values(status=QUEUED, owner=owner, heartbeat=moment, updated=moment)).rowcount == 1

    # --- anybody's ---------------------------------------------------------------------------------

    def cancel(self, store: Store, job_id: str) -> J | None:
        """Mark a job cancelled (the job as it was before; None if unknown or already cancelled)."""
        job = self.get(store, job_id)
        if job is None or job.status == CANCELLED:
            return None
        t = self.table
        with store.writing() as conn:
            result = conn.execute(update(t).where(t.c.id == job_id, t.c.status == job.status)
                                  .values(status=CANCELLED, updated=self.now()))
        return job if result.rowcount == 1 else self.cancel(store, job_id)

    def withdraw(self, store: Store, job_id: str) -> J | None:
        """A client's cancel: a running job stops at its next checkpoint (its worker deletes it), a
        finished one goes now with its files (the job as it was; None if unknown or already cancelled)."""
        job = self.cancel(store, job_id)
        if job is not None and job.status not in ACTIVE:
            self.discard(store, job)
        return job

    def remove(self, store: Store, job_id: str) -> None:
        """Delete the job row (the rows that belong to it go with it: ON DELETE CASCADE)."""
        with store.writing() as conn:
            conn.execute(delete(self.table).where(self.table.c.id == job_id))

    def discard(self, store: Store, job: J) -> None:
        """Delete the job with its directory."""
        if job.directory:
            shutil.rmtree(job.directory, ignore_errors=True)
        self.remove(store, job.id)
