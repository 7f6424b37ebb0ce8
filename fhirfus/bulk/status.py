"""What the status URL of an asynchronous job answers, HTTP-free (the Bulk Data pattern, which
``$export``, ``$import``, ``$viewdefinition-export`` and ``$analysis-export`` all follow).

202 with ``X-Progress`` and ``Retry-After`` while the job runs; 200 with its manifest (and
``Expires`` when the job has an expiry) when done; for a failed job the kind's ``FhirError``
(500 with an OperationOutcome); 404 for jobs that are unknown, cancelled, expired — or not the
caller's, since a job's files hold the requester's data. ``fhirfus.api.asyncjobs`` turns an answer
into a response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path

from fhirfus.bulk.jobtable import ACTIVE, FAILED, LeasedJob
from fhirfus.errors import FhirError, NotFound


class JobFailed(FhirError):
    """The job ended in an error (the status URL answers 500 with the reason)."""

    status = 500
    issue_code = "exception"


@dataclass(frozen=True)
class StatusAnswer:
    """What the status URL answers: 202 (in progress, no body) or 200 (the manifest)."""

    status: int
    manifest: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def in_progress(cls, progress: str, retry_after: int) -> StatusAnswer:
        return cls(202, None, {"X-Progress": progress, "Retry-After": str(retry_after)})

    @classmethod
    def done(cls, manifest: dict, expires: datetime | None = None) -> StatusAnswer:
        return cls(200, manifest, {"Expires": format_datetime(expires, usegmt=True)} if expires else {})


def retry_after(created: datetime, now: datetime) -> int:
    """Poll every second at first, then back off to at most every ten seconds."""
    return max(1, min(10, int((now - created).total_seconds() // 10)))


def answer(job: LeasedJob, now: datetime, *, progress: Callable[[], str], manifest: Callable[[], dict],
           failed: str) -> StatusAnswer:
    """The status of a leased job: ``progress`` while active, ``manifest`` once completed; a failed job
    raises ``JobFailed`` with its error (or ``failed`` when it recorded none)."""
    if job.status in ACTIVE:
        return StatusAnswer.in_progress(progress(), retry_after(job.created, now))
    if job.status == FAILED:
        raise JobFailed(job.error or failed)
    return StatusAnswer.done(manifest(), job.expires)


def gone(kind: str, job_id: str) -> NotFound:
    """What a job the caller may not (or no longer) see answers: 404, as for an id never used."""
    return NotFound(f"No {kind} job '{job_id}': unknown, cancelled or expired", "job")


def listed_file(kind: str, job: LeasedJob, name: str, listed: set[str]) -> Path:
    """A file of ``job`` that its manifest lists (nothing else of the job's directory), still there."""
    if name not in listed or not job.directory:
        raise NotFound(f"{kind.capitalize()} job {job.id} has no file '{name}'", "file")
    path = Path(job.directory) / name
    if not path.is_file():
        raise NotFound(f"The file '{name}' of {kind} job {job.id} is no longer available", "file")
    return path
