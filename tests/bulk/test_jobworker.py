"""The job-worker base every kind of leased job runs on (``fhirfus.bulk.jobworker``): a job whose
owner stopped beating is taken over once its lease has run out on the clock — not before — and run
again; a finished job goes once it expired. The clock and the owner are passed in, so time moves
here instead of passing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fhirfus.bulk import jobs
from fhirfus.bulk.jobtable import COMPLETED, RUNNING, Stopped
from fhirfus.bulk.jobworker import JobWorker
from fhirfus.bulk.params import ExportRequest
from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.store.repository import Store

LEASE = timedelta(seconds=30)
EXPIRE = timedelta(hours=1)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Finisher(JobWorker[jobs.Job]):
    """A kind of job whose work is to complete at once (what it ran is recorded)."""

    kind = "export"

    def __init__(self, store: Store, clock: Clock, owner: str) -> None:
        super().__init__(store, jobs.TABLE.with_clock(clock), max_jobs=1, lease=LEASE, expire=EXPIRE, owner=owner)
        self.ran: list[tuple[str, int]] = []

    def work(self, job: jobs.Job) -> None:
        self.ran.append((job.id, job.attempts))
        with self.store.writing() as conn:
            if not self.table.finish(conn, job.id, self.owner, self.expires()):
                raise Stopped


def test_a_job_is_taken_over_when_its_lease_ran_out_and_removed_when_it_expired(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate.upgrade(engine)
    store, clock = Store(engine), Clock()
    table = jobs.TABLE.with_clock(clock)
    job_id = uuid.uuid4().hex
    table.create(store, job_id, ExportRequest(types=("Patient",)), "http://x/fhir/$export", "dead-host:1:a")
    assert table.start(store, job_id, "dead-host:1:a", str(tmp_path / job_id)) is not None
    survivor = Finisher(store, clock, owner="survivor:2:b")
    try:
        clock.now += LEASE - timedelta(seconds=1)
        survivor.tend()
        waiting = table.get(store, job_id)
        assert waiting is not None and (waiting.status, waiting.owner) == (RUNNING, "dead-host:1:a"), \
            "within its lease the job is its owner's"

        clock.now += timedelta(seconds=2)
        survivor.tend()
    finally:
        survivor.stop()  # waits for the job's thread
    done = table.get(store, job_id)
    assert done is not None and (done.status, done.owner, done.attempts) == (COMPLETED, "survivor:2:b", 2)
    assert survivor.ran == [(job_id, 2)]
    assert done.heartbeat == clock.now and done.expires == clock.now + EXPIRE, "times come from the clock"

    again = Finisher(store, clock, owner="survivor:3:c")
    clock.now += EXPIRE + timedelta(seconds=1)
    again.tend()
    again.stop()
    assert table.get(store, job_id) is None, "an expired job is deleted"
    engine.dispose()
