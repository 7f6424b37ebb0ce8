"""The export worker pool of one server process, and its supervisor.

Jobs run on a small thread pool (``FHIRFUS_EXPORT_MAX_JOBS`` threads), never on the event loop,
so exports do not hold up other requests. A process accepts a new job only while it owns fewer
active jobs than that (else the kick-off gets 429 with ``Retry-After``).

Restarts: a running job refreshes its heartbeat every second. The supervisor (once at start-up,
then every few seconds) adopts jobs whose owner stopped beating for the lease (``FHIRFUS_JOB_LEASE_SECONDS``) — a process that
died — and **runs them again from scratch** under a new ``transactionTime``: nothing from the
interrupted run was visible to the client, so a clean rerun is the simplest correct answer. A job
interrupted ``MAX_ATTEMPTS`` times is marked failed instead (its status then answers 500 with an
OperationOutcome saying so), so an export that kills its server cannot loop forever. An orderly
shutdown hands jobs back unowned, and the next process to look picks them up at once.

The supervisor also deletes expired jobs with their files, and the files of cancelled jobs.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from fhirfus.bulk import jobs
from fhirfus.bulk.params import ExportRequest
from fhirfus.bulk.run import Checkpoint, ExportLimits, ExportResult, run_export
from fhirfus.errors import FhirError, NotImplementedYet, TooManyRequests
from fhirfus.settings import Settings
from fhirfus.store.repository import Store

log = logging.getLogger("fhirfus.export")

HEARTBEAT_SECONDS = 1.0
SUPERVISE_SECONDS = 5.0
MAX_ATTEMPTS = 3
BUSY_RETRY_AFTER = 30


class Stopped(Exception):
    """The job is no longer ours to run: cancelled, or adopted by another process."""


class ShuttingDown(Exception):
    """This process is stopping; the job is handed back."""


class Runner(Protocol):
    """Runs one job of a level into ``directory`` (``run.run_export`` for the Bulk Data levels)."""

    def __call__(self, store: Store, request: ExportRequest, directory: Path, *, job_id: str | None,
                 limits: ExportLimits, checkpoint: Checkpoint | None) -> ExportResult: ...


BULK_LEVELS = ("system", "patient", "group")


class ExportWorker:
    """Runs this process's export jobs and looks after jobs that lost their process.

    ``runners`` adds job levels beyond Bulk Data's (``view``: ``$viewdefinition-export``, whose
    runner the API composes): every kind of job shares the table, the threads and the restarts."""

    def __init__(self, store: Store, settings: Settings, *, lease: timedelta | None = None,
                 supervise_every: float = SUPERVISE_SECONDS, runners: Mapping[str, Runner] | None = None) -> None:
        self.runners: dict[str, Runner] = dict.fromkeys(BULK_LEVELS, run_export)
        self.runners.update(runners or {})
        self.store = store
        self.settings = settings
        self.lease = lease if lease is not None else timedelta(seconds=settings.job_lease_seconds)
        self.supervise_every = supervise_every
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.root = Path(settings.export_dir).resolve()
        self.max_jobs = max(1, settings.export_max_jobs)
        self.limits = ExportLimits(settings.export_file_max_resources, settings.export_file_max_bytes)
        self._executor = ThreadPoolExecutor(max_workers=self.max_jobs, thread_name_prefix="fhirfus-export")
        self._lock = threading.Lock()
        self._running: set[str] = set()  # jobs of this process that a thread has taken on
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, name="fhirfus-export-supervisor", daemon=True)
            self._supervisor.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work, let running jobs notice at their next page, hand everything back."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        self._executor.shutdown(wait=True, cancel_futures=True)
        try:
            jobs.release_all(self.store, self.owner)
        except Exception:
            log.exception("could not hand back export jobs at shutdown")

    # --- kick-off --------------------------------------------------------------------------------

    def submit(self, request: ExportRequest, request_url: str) -> jobs.Job:
        """Create and queue a job, or refuse with 429 while this process is at capacity."""
        with self._lock:
            if self._stopping.is_set() or jobs.count_active(self.store, self.owner) >= self.max_jobs:
                raise TooManyRequests(
                    f"The server is running {self.max_jobs} export job(s) already; retry later",
                    headers={"Retry-After": str(BUSY_RETRY_AFTER)},
                )
            job = jobs.create(self.store, uuid.uuid4().hex, request, request_url, self.owner)
            self._running.add(job.id)
        self._executor.submit(self._run, job.id)
        return job

    # --- one job ---------------------------------------------------------------------------------

    def _run(self, job_id: str) -> None:
        try:
            self._run_job(job_id)
        except Exception:
            log.exception("export %s: could not record its outcome; the supervisor will retry it", job_id)
        finally:
            with self._lock:
                self._running.discard(job_id)

    def _run_job(self, job_id: str) -> None:
        previous = jobs.get(self.store, job_id)
        directory = self.root / f"{job_id}.{uuid.uuid4().hex[:8]}"
        job = jobs.start(self.store, job_id, self.owner, str(directory))
        if job is None:
            self._discard_if_cancelled(job_id)
            return
        if previous is not None and previous.directory:
            shutil.rmtree(previous.directory, ignore_errors=True)  # an interrupted earlier attempt
        try:
            runner = self.runners.get(job.request.level)
            if runner is None:
                raise NotImplementedYet(f"This server process cannot run '{job.request.level}' export jobs")
            result = runner(self.store, job.request, directory, job_id=job_id, limits=self.limits,
                            checkpoint=self._checkpoint(job_id))
            if not jobs.complete(self.store, job_id, self.owner, result.transaction_time, result.files,
                                 jobs.now() + self._ttl()):
                raise Stopped
            log.info("export %s: %d resources in %d files", job_id, result.count, len(result.files))
        except Stopped:
            shutil.rmtree(directory, ignore_errors=True)
            self._discard_if_cancelled(job_id)
        except ShuttingDown:
            shutil.rmtree(directory, ignore_errors=True)
        except FhirError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            jobs.fail(self.store, job_id, self.owner, exc.message, jobs.now() + self._ttl())
        except Exception:
            log.exception("export %s failed", job_id)
            shutil.rmtree(directory, ignore_errors=True)
            jobs.fail(self.store, job_id, self.owner, "The export failed with an internal error (see the server log)",
                      jobs.now() + self._ttl())

    def _checkpoint(self, job_id: str) -> Checkpoint:
        last = time.monotonic()

        def check(written: int, fraction: float) -> None:
            nonlocal last
            if self._stopping.is_set():
                raise ShuttingDown
            moment = time.monotonic()
            if moment - last >= HEARTBEAT_SECONDS:
                last = moment
                if not jobs.beat(self.store, job_id, self.owner, written, int(fraction * 100)):
                    raise Stopped

        return check

    def _discard_if_cancelled(self, job_id: str) -> None:
        job = jobs.get(self.store, job_id)
        if job is not None and job.status == jobs.CANCELLED:
            if job.directory:
                shutil.rmtree(job.directory, ignore_errors=True)
            jobs.remove(self.store, job_id)

    def _ttl(self) -> timedelta:
        return timedelta(seconds=self.settings.export_expire_seconds)

    # --- supervision -----------------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tend()
            except Exception:
                log.exception("export supervisor round failed")
            self._stopping.wait(self.supervise_every)

    def tend(self) -> None:
        """One supervisor round: keep queued jobs alive, adopt orphans, delete what expired."""
        jobs.beat_queued(self.store, self.owner)
        self._adopt_orphans()
        self._purge()

    def _adopt_orphans(self) -> None:
        for job in jobs.orphans(self.store, self.lease):
            if self._stopping.is_set():
                return
            with self._lock:
                if job.id in self._running:
                    continue  # ours and alive, only slow between two heartbeats
                if job.attempts >= MAX_ATTEMPTS:
                    if jobs.adopt(self.store, job, self.owner):
                        if job.directory:
                            shutil.rmtree(job.directory, ignore_errors=True)
                        jobs.fail(self.store, job.id, self.owner,
                                  f"The export was interrupted {job.attempts} times (server restarts); giving up",
                                  jobs.now() + self._ttl())
                    continue
                if job.owner != self.owner and jobs.count_active(self.store, self.owner) >= self.max_jobs:
                    return
                if not jobs.adopt(self.store, job, self.owner):
                    continue
                self._running.add(job.id)
            log.info("export %s: adopted after its server stopped (attempt %d follows)", job.id, job.attempts + 1)
            self._executor.submit(self._run, job.id)

    def _purge(self) -> None:
        for job in jobs.finished_before(self.store, jobs.now(), self.lease):
            if job.directory:
                shutil.rmtree(job.directory, ignore_errors=True)
            jobs.remove(self.store, job.id)
