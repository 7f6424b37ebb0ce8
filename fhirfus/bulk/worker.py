"""The export worker pool of one server process (``FHIRFUS_EXPORT_MAX_JOBS`` threads) and its supervisor.

Leases, heartbeats, cancellation, adoption and expiry are every leased job's
(``fhirfus.bulk.jobworker``). An export adopted after its process died **runs again from scratch**
under a new ``transactionTime``: nothing from the interrupted run was visible to the client, so a
clean rerun is the simplest correct answer. Each attempt writes into a directory of its own; the
files of an attempt that did not complete are deleted.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from fhirfus.bulk import jobs
from fhirfus.bulk.jobtable import Stopped, utc_now
from fhirfus.bulk.jobworker import SUPERVISE_SECONDS, JobWorker
from fhirfus.bulk.params import ExportRequest
from fhirfus.bulk.run import Checkpoint, ExportLimits, ExportResult, run_export
from fhirfus.errors import NotImplementedYet
from fhirfus.settings import Settings
from fhirfus.store.repository import Store


class Runner(Protocol):
    """Runs one job of a level into ``directory`` (``run.run_export`` for the Bulk Data levels)."""

    def __call__(self, store: Store, request: ExportRequest, directory: Path, *, job_id: str | None,
                 limits: ExportLimits, checkpoint: Checkpoint | None) -> ExportResult: ...


BULK_LEVELS = ("system", "patient", "group")


class ExportWorker(JobWorker[jobs.Job]):
    """Runs this process's export jobs and looks after jobs that lost their process.

    ``runners`` adds job levels beyond Bulk Data's (``view``: ``$viewdefinition-export``, whose
    runner the API composes): every kind of job shares the table, the threads and the restarts."""

    kind = "export"
    table: jobs.ExportJobs

    def __init__(self, store: Store, settings: Settings, *, lease: timedelta | None = None,
                 supervise_every: float = SUPERVISE_SECONDS, runners: Mapping[str, Runner] | None = None,
                 owner: str | None = None, clock: Callable[[], datetime] = utc_now) -> None:
        super().__init__(store, jobs.TABLE.with_clock(clock), max_jobs=settings.export_max_jobs,
                         lease=lease if lease is not None else timedelta(seconds=settings.job_lease_seconds),
                         expire=timedelta(seconds=settings.export_expire_seconds), supervise_every=supervise_every,
                         owner=owner)
        self.runners: dict[str, Runner] = dict.fromkeys(BULK_LEVELS, run_export)
        self.runners.update(runners or {})
        self.settings = settings
        self.root = Path(settings.export_dir).resolve()
        self.limits = ExportLimits(settings.export_file_max_resources, settings.export_file_max_bytes)

    def submit(self, request: ExportRequest, request_url: str) -> jobs.Job:
        """Create and queue a job, or refuse with 429 while this process is at capacity."""
        return self.queue(lambda: self.table.create(self.store, uuid.uuid4().hex, request, request_url, self.owner))

    def begin(self, job_id: str) -> jobs.Job | None:
        previous = self.table.get(self.store, job_id)
        job = self.table.start(self.store, job_id, self.owner, str(self.root / f"{job_id}.{uuid.uuid4().hex[:8]}"))
        if job is not None and previous is not None and previous.directory:
            shutil.rmtree(previous.directory, ignore_errors=True)  # an interrupted earlier attempt
        return job

    def work(self, job: jobs.Job) -> None:
        runner = self.runners.get(job.request.level)
        if runner is None:
            raise NotImplementedYet(f"This server process cannot run '{job.request.level}' export jobs")
        assert job.directory is not None
        pulse = self.pulse(job.id)
        result = runner(self.store, job.request, Path(job.directory), job_id=job.id, limits=self.limits,
                        checkpoint=lambda written, fraction: pulse(progress=written, percent=int(fraction * 100)))
        if not self.table.complete(self.store, job.id, self.owner, result.transaction_time, result.files,
                                   self.expires()):
            raise Stopped
        self.log.info("export %s: %d resources in %d files", job.id, result.count, len(result.files))

    def abandon(self, job: jobs.Job) -> None:
        if job.directory:
            shutil.rmtree(job.directory, ignore_errors=True)
