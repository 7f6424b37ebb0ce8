"""The import worker pool of one server process (``FHIRFUS_IMPORT_MAX_JOBS`` threads) and its supervisor.

Leases, heartbeats, cancellation, adoption and expiry are every leased job's
(``fhirfus.bulk.jobworker``). A running import beats between chunks; one adopted after its process
died **resumes** from its last committed chunk (``fhirfus.bulk.imports.load``). Expired and
cancelled jobs are deleted with their files.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from fhirfus.auth.audit import AuditRecord, RequestAudit
from fhirfus.bulk.imports import jobs
from fhirfus.bulk.imports.load import run_import
from fhirfus.bulk.imports.sources import FetchLimits
from fhirfus.bulk.jobtable import Stopped, utc_now
from fhirfus.bulk.jobworker import SUPERVISE_SECONDS, JobWorker
from fhirfus.settings import Settings
from fhirfus.store.repository import Store


class ImportWorker(JobWorker[jobs.ImportJob]):
    """Runs this process's import jobs and resumes jobs that lost their process."""

    kind = "import"
    table: jobs.ImportJobs

    def __init__(self, store: Store, settings: Settings, *, lease: timedelta | None = None,
                 supervise_every: float = SUPERVISE_SECONDS, chunk_lines: int | None = None,
                 owner: str | None = None, clock: Callable[[], datetime] = utc_now) -> None:
        super().__init__(store, jobs.TABLE.with_clock(clock), max_jobs=settings.import_max_jobs,
                         lease=lease if lease is not None else timedelta(seconds=settings.job_lease_seconds),
                         expire=timedelta(seconds=settings.export_expire_seconds), supervise_every=supervise_every,
                         owner=owner)
        self.settings = settings
        self.chunk_lines = chunk_lines
        self.root = Path(settings.export_dir).resolve() / "imports"
        self.limits = FetchLimits(settings.import_max_inputs, settings.import_max_bytes,
                                  float(settings.import_fetch_timeout), settings.import_allowed_hosts)

    def new_directory(self, job_id: str) -> Path:
        directory = self.root / job_id
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def submit(self, job_id: str) -> None:
        self.launch(job_id)

    def begin(self, job_id: str) -> jobs.ImportJob | None:
        return self.table.start(self.store, job_id, self.owner)

    def work(self, job: jobs.ImportJob) -> None:
        run_import(self.store, job, self.owner, self.limits, base_url=job.request.get("base", ""),
                   checkpoint=self.pulse(job.id), audit=self._audit(job), table=self.table,
                   **({"chunk_lines": self.chunk_lines} if self.chunk_lines else {}))
        if not self.table.complete(self.store, job.id, self.owner, self.expires()):
            raise Stopped
        self.log.info("import %s completed", job.id)

    def adopted(self, job: jobs.ImportJob) -> None:
        self.log.info("import %s: adopted, resuming at input %s line %s", job.id, job.progress.get("input"),
                      job.progress.get("line"))

    def _audit(self, job: jobs.ImportJob) -> RequestAudit | None:
        """The job's AuditEvent (when requests are audited), written with its last commit."""
        if self.settings.auth == "off":
            return None
        return RequestAudit(AuditRecord(job.client_id, job.role, job.site, "POST", "/fhir/$import",
                                        f"job={job.id}", 200, None, self.table.now()))
