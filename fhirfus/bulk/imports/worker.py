"""The import worker pool of one server process, and its supervisor.

Jobs run on a small thread pool (``FHIRFUS_IMPORT_MAX_JOBS`` threads), never on the event loop.
A running job beats its heartbeat between chunks; the supervisor (at start-up, then every few
seconds) adopts jobs whose owner stopped beating for ``FHIRFUS_JOB_LEASE_SECONDS`` — a process
that died — and **resumes** them from the last committed chunk (``fhirfus.bulk.imports.load``). A job interrupted
``MAX_ATTEMPTS`` times fails with a reason instead of looping. An orderly shutdown hands jobs back
unowned; the next process to look resumes them at once. Expired and cancelled jobs are deleted
with their files.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fhirfus.auth.audit import AuditRecord, RequestAudit
from fhirfus.bulk.imports import jobs
from fhirfus.bulk.imports.load import Checkpoint, run_import
from fhirfus.bulk.imports.sources import FetchLimits
from fhirfus.errors import FhirError, TooManyRequests
from fhirfus.settings import Settings
from fhirfus.store.repository import Store

log = logging.getLogger("fhirfus.import")

HEARTBEAT_SECONDS = 1.0
SUPERVISE_SECONDS = 5.0
MAX_ATTEMPTS = 3
BUSY_RETRY_AFTER = 30


class ShuttingDown(Exception):
    """This process is stopping; the job is handed back."""


class ImportWorker:
    """Runs this process's import jobs and resumes jobs that lost their process."""

    def __init__(self, store: Store, settings: Settings, *, lease: timedelta | None = None,
                 supervise_every: float = SUPERVISE_SECONDS, chunk_lines: int | None = None) -> None:
        self.store = store
        self.settings = settings
        self.lease = lease if lease is not None else timedelta(seconds=settings.job_lease_seconds)
        self.supervise_every = supervise_every
        self.chunk_lines = chunk_lines
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.root = Path(settings.export_dir).resolve() / "imports"
        self.max_jobs = max(1, settings.import_max_jobs)
        self.limits = FetchLimits(settings.import_max_inputs, settings.import_max_bytes,
                                  float(settings.import_fetch_timeout), settings.import_allowed_hosts)
        self._executor = ThreadPoolExecutor(max_workers=self.max_jobs, thread_name_prefix="fhirfus-import")
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def start(self) -> None:
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, name="fhirfus-import-supervisor", daemon=True)
            self._supervisor.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work, let running jobs notice between chunks, hand everything back."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        self._executor.shutdown(wait=True, cancel_futures=True)
        try:
            jobs.release_all(self.store, self.owner)
        except Exception:
            log.exception("could not hand back import jobs at shutdown")

    def new_directory(self, job_id: str) -> Path:
        directory = self.root / job_id
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def reserve(self) -> None:
        """429 while this process is at capacity (checked before an upload is stored)."""
        if self._stopping.is_set() or jobs.count_active(self.store, self.owner) >= self.max_jobs:
            raise TooManyRequests(f"The server is running {self.max_jobs} import job(s) already; retry later",
                                  headers={"Retry-After": str(BUSY_RETRY_AFTER)})

    def submit(self, job_id: str) -> None:
        with self._lock:
            self._running.add(job_id)
        self._executor.submit(self._run, job_id)

    def _run(self, job_id: str) -> None:
        try:
            self._run_job(job_id)
        except Exception:
            log.exception("import %s: could not record its outcome; the supervisor will retry it", job_id)
        finally:
            with self._lock:
                self._running.discard(job_id)

    def _run_job(self, job_id: str) -> None:
        job = jobs.start(self.store, job_id, self.owner)
        if job is None:
            self._discard_if_cancelled(job_id)
            return
        try:
            run_import(self.store, job, self.owner, self.limits, base_url=job.request.get("base", ""),
                       checkpoint=self._checkpoint(job_id), audit=self._audit(job),
                       **({"chunk_lines": self.chunk_lines} if self.chunk_lines else {}))
            if not jobs.complete(self.store, job_id, self.owner, jobs.now() + self._ttl()):
                raise jobs.Stopped
            log.info("import %s completed", job_id)
        except jobs.Stopped:
            self._discard_if_cancelled(job_id)
        except ShuttingDown:
            pass
        except FhirError as exc:
            jobs.fail(self.store, job_id, self.owner, exc.message, jobs.now() + self._ttl())
        except Exception:
            log.exception("import %s failed", job_id)
            jobs.fail(self.store, job_id, self.owner, "The import failed with an internal error (see the server log)",
                      jobs.now() + self._ttl())

    def _audit(self, job: jobs.ImportJob) -> RequestAudit | None:
        """The job's AuditEvent (when requests are audited), written with its last commit."""
        if self.settings.auth == "off":
            return None
        return RequestAudit(AuditRecord(job.client_id, job.role, job.site, "POST", "/fhir/$import",
                                        f"job={job.id}", 200, None, datetime.now(UTC)))

    def _checkpoint(self, job_id: str) -> Checkpoint:
        last = time.monotonic()

        def check() -> None:
            nonlocal last
            if self._stopping.is_set():
                raise ShuttingDown
            moment = time.monotonic()
            if moment - last >= HEARTBEAT_SECONDS:
                last = moment
                if not jobs.beat(self.store, job_id, self.owner):
                    raise jobs.Stopped

        return check

    def _discard_if_cancelled(self, job_id: str) -> None:
        job = jobs.get(self.store, job_id)
        if job is not None and job.status == jobs.CANCELLED:
            if job.directory:
                shutil.rmtree(job.directory, ignore_errors=True)
            jobs.remove(self.store, job_id)

    def _ttl(self) -> timedelta:
        return timedelta(seconds=self.settings.export_expire_seconds)

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tend()
            except Exception:
                log.exception("import supervisor round failed")
            self._stopping.wait(self.supervise_every)

    def tend(self) -> None:
        """One supervisor round: adopt orphans (to resume them), delete what expired or was cancelled."""
        for job in jobs.orphans(self.store, self.lease):
            if self._stopping.is_set():
                return
            with self._lock:
                if job.id in self._running:
                    continue
                if job.attempts >= MAX_ATTEMPTS:
                    if jobs.adopt(self.store, job, self.owner):
                        jobs.fail(self.store, job.id, self.owner,
                                  f"The import was interrupted {job.attempts} times (server restarts); giving up",
                                  jobs.now() + self._ttl())
                    continue
                if job.owner != self.owner and jobs.count_active(self.store, self.owner) >= self.max_jobs:
                    return
                if not jobs.adopt(self.store, job, self.owner):
                    continue
                self._running.add(job.id)
            log.info("import %s: adopted, resuming at input %s line %s", job.id, job.progress.get("input"),
                     job.progress.get("line"))
            self._executor.submit(self._run, job.id)
        for job in jobs.finished_before(self.store, jobs.now(), self.lease):
            if job.directory:
                shutil.rmtree(job.directory, ignore_errors=True)
            jobs.remove(self.store, job.id)
