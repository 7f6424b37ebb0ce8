"""Export jobs in the database: the only shared state between server processes.

Their life cycle (queued → running → completed | failed, cancelled; owner, heartbeat, guarded
updates, leases) is every leased job's: ``fhirfus.bulk.jobtable``. What an export adds: its request,
its ``transactionTime`` and progress, the files a completed job lists, and the patients and
``_typeFilter`` matches staged while it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from sqlalchemy import Row, insert, select

from fhirfus.bulk.jobtable import ACTIVE, CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING, JobTable, LeasedJob
from fhirfus.bulk.params import ExportRequest
from fhirfus.bulk.writer import WrittenFile
from fhirfus.db.tables import export_files, export_job_matches, export_job_patients, export_jobs
from fhirfus.store.repository import Store

__all__ = ["ACTIVE", "CANCELLED", "COMPLETED", "FAILED", "QUEUED", "RUNNING", "TABLE", "ExportJobs", "Job"]


@dataclass(frozen=True)
class Job(LeasedJob):
    request: ExportRequest
    request_url: str
    transaction_time: datetime | None
    progress: int
    percent: int

    @classmethod
    def from_row(cls, row: Row, **given: Any) -> Self:
        return super().from_row(row, request=ExportRequest.from_json(row.params), **given)


class ExportJobs(JobTable[Job]):
    """The ``export_jobs`` table with what an export records beside its life cycle."""

    def create(self, store: Store, job_id: str, request: ExportRequest, request_url: str, owner: str) -> Job:
        self.insert(store, job_id, owner, level=request.level, group_id=request.group_id, request_url=request_url,
                    params=request.to_json(), progress=0, percent=0)
        job = self.get(store, job_id)
        assert job is not None
        return job

    def start(self, store: Store, job_id: str, owner: str, directory: str) -> Job | None:
        """queued → running into a fresh ``directory`` (None: cancelled or taken over meanwhile)."""
        return self.begin(store, job_id, owner, directory=directory, progress=0, percent=0, transaction_time=None)

    def beat(self, store: Store, job_id: str, owner: str, progress: int, percent: int) -> bool:
        """Refresh a running job's heartbeat and progress; False when the job is no longer ours."""
        return self.heartbeat(store, job_id, owner, progress=progress, percent=percent)

    def complete(self, store: Store, job_id: str, owner: str, transaction_time: datetime,
                 files: Sequence[WrittenFile], expires: datetime) -> bool:
        """running → completed, with the files its manifest lists (in one transaction)."""
        with store.writing() as conn:
            if not self.finish(conn, job_id, owner, expires, transaction_time=transaction_time, percent=100,
                               progress=sum(f.count for f in files if f.kind == "output")):
                return False
            if files:
                conn.execute(
                    insert(export_files),
                    [{"job_id": job_id, "name": f.name, "kind": f.kind, "res_type": f.res_type, "seq": f.seq,
                      "count": f.count, "size": f.size} for f in files],
                )
        return True

    def recent(self, store: Store, limit: int = 200) -> list[Job]:
        """The newest jobs, cancelled ones aside (what an admin watches)."""
        t = self.table
        with store.reading() as conn:
            rows = conn.execute(select(t).where(t.c.status != CANCELLED).order_by(t.c.created.desc()).limit(limit)).all()
        return [self.job(r) for r in rows]


def files_of(store: Store, job_id: str) -> list[WrittenFile]:
    with store.reading() as conn:
        rows = conn.execute(
            select(export_files).where(export_files.c.job_id == job_id)
            .order_by(export_files.c.kind.desc(), export_files.c.res_type, export_files.c.seq)
        ).all()
    return [WrittenFile(r.name, r.kind, r.res_type, r.seq, r._mapping["count"], r.size) for r in rows]


#: Staged patients and matches are only needed while the job runs.
TABLE = ExportJobs(export_jobs, Job.from_row, staging=(export_job_patients, export_job_matches))
now = TABLE.now
get = TABLE.get
live = TABLE.live
create = TABLE.create
start = TABLE.start
beat = TABLE.beat
complete = TABLE.complete
fail = TABLE.fail
cancel = TABLE.cancel
remove = TABLE.remove
recent = TABLE.recent
