"""Analysis export jobs: a background thread per process, the job state in a file beside its output.

Why not a table: an analysis job is short (seconds), its whole result is files, and the state is
only read by whoever polls. Keeping ``job.json`` in the job's own directory under
``FHIRFUS_EXPORT_DIR/analysis/`` means any server process on the host can answer a status poll
or serve the files, a finished job survives a restart, and deleting the directory deletes the
job. A job whose process died (no heartbeat for ``STALE_SECONDS`` and its pid gone) is reported
as failed; it is not resumed (rerunning is as cheap as resuming).

Finished jobs are removed with their files after ``expire_seconds`` (FHIRFUS_EXPORT_EXPIRES), swept
at each kick-off. Jobs run one at a time per process (``workers``): the work is CPU-bound Python, so a second
thread would only share the GIL with the first.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from fhirfus.errors import FhirError, Issue, NotFound
from fhirfus.store.repository import Store


def _run_analysis(*args, **kwargs):
    """The pipeline, imported on first use: pandas, scipy and matplotlib cost ~150 MB the server
    does not need until somebody asks for an analysis export."""
    from fhirfus.analysis.export import run_analysis

    return run_analysis(*args, **kwargs)

log = logging.getLogger("fhirfus.analysis")

JOB_FILE = "job.json"
STALE_SECONDS = 300
HEARTBEAT_SECONDS = 1.0
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class _Cancelled(Exception):
    pass


@dataclass
class JobState:
    id: str
    status: str  # accepted, running, completed, failed
    request: str
    group_id: str | None
    format: str
    policy: str | None
    created: str
    updated: str
    transaction_time: str | None = None
    stage: str = ""
    done: int = 0
    total: int | None = None
    http_status: int | None = None
    issues: list[dict] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    deidentification: dict[str, Any] = field(default_factory=dict)
    pid: int = 0
    client: str | None = None  # the authenticated client that started the job

    @property
    def progress(self) -> str:
        if self.status == "accepted":
            return "queued"
        if self.total:
            return f"{self.stage}: {self.done}/{self.total} ({100 * self.done // self.total}%)"
        return self.stage or self.status


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AnalysisJobs:
    """Submit, poll, serve and delete analysis jobs under ``root``."""

    def __init__(self, store: Store, root: Path, *, key: str | None, workers: int = 1,
                 expire_seconds: int = 24 * 3600) -> None:
        """``key``: the de-identification key of the deployment (``Settings.deid_key``)."""
        self.key = key
        self.store = store
        self.root = root
        self.expire_seconds = expire_seconds
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fhirfus-analysis")
        self.cancelled: set[str] = set()
        self.lock = threading.Lock()

    # --- state files ---

    def _dir(self, job_id: str) -> Path:
        if not _JOB_ID.match(job_id):
            raise NotFound(f"No analysis job {job_id}", "job")
        return self.root / job_id

    def _write(self, job: JobState) -> None:
        directory = self.root / job.id
        directory.mkdir(parents=True, exist_ok=True)
        job.updated = _now()
        temporary = directory / f".{JOB_FILE}.{threading.get_ident()}"
        temporary.write_bytes(orjson.dumps(asdict(job)))
        os.replace(temporary, directory / JOB_FILE)

    def get(self, job_id: str) -> JobState:
        path = self._dir(job_id) / JOB_FILE
        try:
            job = JobState(**orjson.loads(path.read_bytes()))
        except (FileNotFoundError, orjson.JSONDecodeError, TypeError) as exc:
            raise NotFound(f"No analysis job {job_id}", "job") from exc
        if job.status in ("accepted", "running") and _age(job.updated) > STALE_SECONDS and not _alive(job.pid):
            job.status, job.http_status = "failed", 500
            job.issues = [Issue("The process running this export stopped; start a new export", "exception").to_fhir()]
        return job

    # --- lifecycle ---

    def submit(self, request: str, group_id: str | None, fmt: str, policy: str | None,
               client: str | None = None) -> JobState:
        self.expire()
        created = _now()
        job = JobState(uuid.uuid4().hex, "accepted", request, group_id, fmt, policy, created, created,
                       pid=os.getpid(), client=client)
        self._write(job)
        self.executor.submit(self._run, job)
        return job

    def _run(self, job: JobState) -> None:
        job.status, job.transaction_time = "running", _now()
        self._write(job)
        last_beat = 0.0

        def progress(stage: str, done: int, total: int | None) -> None:
            nonlocal last_beat
            if job.id in self.cancelled:
                raise _Cancelled
            job.stage, job.done, job.total = stage, done, total
            if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                last_beat = time.monotonic()
                self._write(job)

        try:
            result = _run_analysis(self.store, job.group_id, self.root / job.id / "files", job.format, job.policy,
                                  progress, key=self.key,
                                  snapshot=datetime.fromisoformat(job.transaction_time.replace("Z", "+00:00"))
                                  if job.transaction_time else None)
        except _Cancelled:
            return
        except FhirError as exc:
            job.status, job.http_status, job.issues = "failed", exc.status, [i.to_fhir() for i in exc.issues]
        except Exception:  # a job must end in a state a client can read, whatever happened
            log.exception("Analysis job %s failed", job.id)
            job.status, job.http_status = "failed", 500
            job.issues = [Issue("The analysis export failed; see the server log", "exception", "fatal").to_fhir()]
        else:
            job.status, job.http_status = "completed", 200
            job.files = [asdict(f) for f in result.files]
            job.deidentification = {k: result.statistics["deidentification"][k] for k in ("policy", "policy_sha256")}
        if job.id not in self.cancelled:
            self._write(job)

    def expire(self) -> None:
        """Remove finished jobs (and their files) older than ``expire_seconds``; runs on each kick-off."""
        if not self.root.is_dir():
            return
        for directory in self.root.iterdir():
            if not _JOB_ID.match(directory.name):
                continue
            try:
                job = self.get(directory.name)
            except NotFound:
                continue
            if job.status in ("completed", "failed") and _age(job.updated) > self.expire_seconds:
                shutil.rmtree(directory, ignore_errors=True)

    def delete(self, job_id: str) -> None:
        directory = self._dir(job_id)
        self.get(job_id)  # 404 for an unknown job
        with self.lock:
            self.cancelled.add(job_id)
        shutil.rmtree(directory, ignore_errors=True)

    def file(self, job_id: str, name: str) -> tuple[Path, str]:
        job = self.get(job_id)
        for entry in job.files:
            if entry["name"] == name:
                return self.root / job_id / "files" / name, entry["media_type"]
        raise NotFound(f"Analysis job {job_id} has no file {name}", "file")

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _age(instant: str) -> float:
    try:
        return (datetime.now(UTC) - datetime.fromisoformat(instant.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return 0.0


def _alive(pid: int) -> bool:
    """Whether the process that owns a job still runs (jobs are owned by a process on this host)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
