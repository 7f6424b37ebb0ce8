"""The job threads of one server process and their supervisor, for any kind of leased job.

Jobs run on a small thread pool (``max_jobs`` threads), never on the event loop. A process takes
a new job only while it owns fewer active jobs than that (else the kick-off gets 429 with
``Retry-After``). A running job beats its heartbeat at most every ``HEARTBEAT_SECONDS`` from its
checkpoints, where it also notices that it was cancelled or taken away (``Stopped``) or that the
process is stopping (``ShuttingDown``).

The supervisor (at start-up, then every few seconds) keeps queued jobs alive, adopts jobs whose
owner stopped beating for the lease (``FHIRFUS_JOB_LEASE_SECONDS``) — a process that died — and
runs them again (what "again" means is the kind's: an export starts over, an import resumes). A
job interrupted ``MAX_ATTEMPTS`` times is failed with a reason instead, so a job that kills its
server cannot loop forever. An orderly shutdown hands jobs back unowned, and the next process to
look takes them at once. Expired jobs, and cancelled ones nobody works on, are deleted with their
files.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Generic

from fhirfus.bulk.jobtable import CANCELLED, J, JobTable, Stopped
from fhirfus.errors import FhirError, TooManyRequests
from fhirfus.store.repository import Store

HEARTBEAT_SECONDS = 1.0
SUPERVISE_SECONDS = 5.0
MAX_ATTEMPTS = 3
BUSY_RETRY_AFTER = 30

__all__ = ["JobWorker", "ShuttingDown", "Stopped", "new_owner"]


class ShuttingDown(Exception):
    """This process is stopping; the job is handed back."""


def new_owner() -> str:
    """A name no other process (here or on another host) has: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobWorker(Generic[J]):
    """Runs this process's jobs of one table and looks after jobs that lost their process.

    A kind says how to start a job (``begin``), run it to its completion (``work``), and clean up
    an attempt that did not finish (``abandon``); leases, heartbeats, cancellation, adoption,
    retries and expiry are the same for every kind."""

    #: The kind's name in messages, logs and thread names ("export", "import").
    kind = "job"

    def __init__(self, store: Store, table: JobTable[J], *, max_jobs: int, lease: timedelta, expire: timedelta,
                 supervise_every: float = SUPERVISE_SECONDS, owner: str | None = None) -> None:
        self.store = store
        self.table = table
        self.lease = lease
        self.expire = expire
        self.supervise_every = supervise_every
        self.heartbeat_seconds = HEARTBEAT_SECONDS
        self.owner = owner or new_owner()
        self.max_jobs = max(1, max_jobs)
        self.log = logging.getLogger(f"fhirfus.{self.kind}")
        self._executor = ThreadPoolExecutor(max_workers=self.max_jobs, thread_name_prefix=f"fhirfus-{self.kind}")
        self._lock = threading.RLock()
        self._running: set[str] = set()  # jobs of this process that a thread has taken on
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    # --- what a kind of job says -----------------------------------------------------------------

    def begin(self, job_id: str) -> J | None:
        """queued → running (None: not ours any more)."""
        return self.table.begin(self.store, job_id, self.owner)

    def work(self, job: J) -> None:
        """Run a started job to its end and record it; raise ``Stopped`` when it is no longer ours."""
        raise NotImplementedError

    def abandon(self, job: J) -> None:
        """Clean up after an attempt that did not complete (its partial files, say)."""

    def adopted(self, job: J) -> None:
        self.log.info("%s %s: adopted after its server stopped (attempt %d follows)", self.kind, job.id,
                      job.attempts + 1)

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, name=f"fhirfus-{self.kind}-supervisor",
                                                daemon=True)
            self._supervisor.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work, let running jobs notice at their next checkpoint, hand everything back."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        self._executor.shutdown(wait=True, cancel_futures=True)
        try:
            self.table.release_all(self.store, self.owner)
        except Exception:
            self.log.exception("could not hand back %s jobs at shutdown", self.kind)

    # --- kick-off --------------------------------------------------------------------------------

    def reserve(self) -> None:
        """429 while this process is stopping or at capacity."""
        if self._stopping.is_set() or self.table.count_active(self.store, self.owner) >= self.max_jobs:
            raise TooManyRequests(f"The server is running {self.max_jobs} {self.kind} job(s) already; retry later",
                                  headers={"Retry-After": str(BUSY_RETRY_AFTER)})

    def queue(self, create: Callable[[], J]) -> J:
        """Create a job with ``create`` once there is room for it (else 429), and run it."""
        with self._lock:
            self.reserve()
            job = create()
            self.launch(job.id)
        return job

    def launch(self, job_id: str) -> None:
        """Run a job of this process on a thread."""
        with self._lock:
            self._running.add(job_id)
        self._executor.submit(self._run, job_id)

    def expires(self) -> datetime:
        """When a job that ends now expires."""
        return self.table.now() + self.expire

    # --- one job ---------------------------------------------------------------------------------

    def _run(self, job_id: str) -> None:
        try:
            self._run_job(job_id)
        except Exception:
            self.log.exception("%s %s: could not record its outcome; the supervisor will retry it", self.kind, job_id)
        finally:
            with self._lock:
                self._running.discard(job_id)

    def _run_job(self, job_id: str) -> None:
        job = self.begin(job_id)
        if job is None:
            self._discard_if_cancelled(job_id)
            return
        try:
            self.work(job)
        except Stopped:
            self.abandon(job)
            self._discard_if_cancelled(job_id)
        except ShuttingDown:
            self.abandon(job)
        except FhirError as exc:
            self.abandon(job)
            self.fail(job_id, exc.message)
        except Exception:
            self.log.exception("%s %s failed", self.kind, job_id)
            self.abandon(job)
            self.fail(job_id, f"The {self.kind} failed with an internal error (see the server log)")

    def fail(self, job_id: str, message: str) -> None:
        self.table.fail(self.store, job_id, self.owner, message, self.expires())

    def pulse(self, job_id: str) -> Callable[..., None]:
        """A running job's checkpoint: stop when the process does, beat (with the progress given) at
        most every ``heartbeat_seconds``, and stop when the job is no longer ours."""
        last = time.monotonic()

        def check(**progress: Any) -> None:
            nonlocal last
            if self._stopping.is_set():
                raise ShuttingDown
            moment = time.monotonic()
            if moment - last >= self.heartbeat_seconds:
                last = moment
                if not self.table.heartbeat(self.store, job_id, self.owner, **progress):
                    raise Stopped

        return check

    def _discard_if_cancelled(self, job_id: str) -> None:
        job = self.table.get(self.store, job_id)
        if job is not None and job.status == CANCELLED:
            self.table.discard(self.store, job)

    # --- supervision -----------------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tend()
            except Exception:
                self.log.exception("%s supervisor round failed", self.kind)
            self._stopping.wait(self.supervise_every)

    def tend(self) -> None:
        """One supervisor round: keep queued jobs alive, adopt orphans, delete what expired."""
        self.table.beat_queued(self.store, self.owner)
        self._adopt_orphans()
        for job in self.table.finished_before(self.store, self.table.now(), self.lease):
            self.table.discard(self.store, job)

    def _adopt_orphans(self) -> None:
        for job in self.table.orphans(self.store, self.lease):
            if self._stopping.is_set():
                return
            with self._lock:
                if job.id in self._running:
                    continue  # ours and alive, only slow between two heartbeats
                if job.attempts >= MAX_ATTEMPTS:
                    if self.table.adopt(self.store, job, self.owner):
                        self.abandon(job)
                        self.fail(job.id, f"The {self.kind} was interrupted {job.attempts} times (server restarts); "
                                          "giving up")
                    continue
                if job.owner != self.owner and self.table.count_active(self.store, self.owner) >= self.max_jobs:
                    return
                if not self.table.adopt(self.store, job, self.owner):
                    continue
                self._running.add(job.id)
            self.adopted(job)
            self._executor.submit(self._run, job.id)
