"""Import jobs in the database, the only state shared between server processes.

Their life cycle (queued → running → completed | failed, cancelled; owner, heartbeat, guarded
updates, leases) is every leased job's: ``fhirfus.bulk.jobtable``. Unlike an export, an adopted
import does not start over: ``progress`` (phase, input, next line, counts) is written in the
transaction of each committed chunk, together with that chunk's line errors, so the job resumes at
the first line no commit covered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select

from fhirfus.auth.access import Access
from fhirfus.auth.scopes import Grant
from fhirfus.bulk.jobtable import ACTIVE, CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING, JobTable, LeasedJob, Stopped
from fhirfus.db.tables import import_errors, import_jobs
from fhirfus.store.repository import Store

__all__ = [
    "ACTIVE",
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "QUEUED",
    "RUNNING",
    "TABLE",
    "ImportJob",
    "ImportJobs",
    "Stopped",
]

FETCH, LOAD, DONE = "fetch", "load", "done"


@dataclass(frozen=True)
class ImportJob(LeasedJob):
    client_id: str
    role: str
    site: str | None
    scopes: str
    request: dict
    progress: dict

    @property
    def caller(self) -> Access:
        """The requester as it was at kick-off (role, site, scopes), for the job's writes."""
        return Access(self.client_id, self.role, self.site, grants_of(self.scopes))


def scopes_text(grants: Sequence[Grant]) -> str:
    return " ".join(f"{g.res_type}:{g.permissions}" for g in grants)


def grants_of(text: str) -> tuple[Grant, ...]:
    return tuple(Grant(*item.split(":", 1)) for item in text.split())


def initial_progress(inputs: int, phase: str) -> dict:
    return {"phase": phase, "input": 0, "line": 0, "chunks": 0,
            "inputs": [{"read": 0, "loaded": 0, "errors": 0} for _ in range(inputs)]}


class ImportJobs(JobTable[ImportJob]):
    """The ``import_jobs`` table with an import's progress and line errors beside its life cycle."""

    def create(self, store: Store, job_id: str, caller: Access, request: dict, directory: str, owner: str,
               phase: str) -> None:
        self.insert(store, job_id, owner, client_id=caller.client_id, role=caller.role, site=caller.site,
                    scopes=scopes_text(caller.grants), request=request,
                    progress=initial_progress(len(request["inputs"]), phase), directory=directory)

    def start(self, store: Store, job_id: str, owner: str) -> ImportJob | None:
        """queued → running for its owner, progress kept (None: cancelled or taken over meanwhile)."""
        return self.begin(store, job_id, owner)

    def commit_progress(self, conn: Connection, job_id: str, owner: str, progress: dict,
                        errors: Sequence[tuple[int, int, dict]] = (), request: dict | None = None) -> None:
        """In the caller's transaction: the new progress and the line errors (input, line, outcome);
        raises ``Stopped`` (rolling the transaction back) when the job is no longer ours."""
        if not self.heartbeat_in(conn, job_id, owner, progress=progress,
                                 **({"request": request} if request is not None else {})):
            raise Stopped
        if errors:
            conn.execute(insert(import_errors), [{"job_id": job_id, "input": i, "line": n, "outcome": o}
                                                 for i, n, o in errors])

    def complete(self, store: Store, job_id: str, owner: str, expires: datetime) -> bool:
        with store.writing() as conn:
            return self.finish(conn, job_id, owner, expires)


def errors_of(store: Store, job_id: str, input_index: int) -> Iterator[dict]:
    with store.reading() as conn:
        rows = conn.execute(select(import_errors.c.outcome)
                            .where(import_errors.c.job_id == job_id, import_errors.c.input == input_index)
                            .order_by(import_errors.c.line)).all()
    for row in rows:
        yield row.outcome


TABLE = ImportJobs(import_jobs, ImportJob.from_row)
now = TABLE.now
get = TABLE.get
create = TABLE.create
start = TABLE.start
commit_progress = TABLE.commit_progress
complete = TABLE.complete
fail = TABLE.fail
cancel = TABLE.cancel
remove = TABLE.remove
