"""An idle delivery worker hardly queries, and a write still wakes it at once.

The worker looks at the queue every ``FHIRFUS_SUBSCRIPTION_POLL_MS`` while there is work, and
backs off (the wait doubling) up to ``FHIRFUS_SUBSCRIPTION_IDLE_POLL_MS`` while there is none.
Its looks are counted as the queries it sends on ``subscription_queue``, not as CPU time (which
other work on the machine blurs).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.settings import Settings
from fhirfus.store import repository
from fhirfus.store.repository import Store
from fhirfus.subscriptions.service import Subscriptions
from fhirfus.testing import Receiver

POLL_MS = 50
IDLE_POLL_MS = 3000
#: The most looks an idle worker may take per second (at ``POLL_MS`` it would take 20).
MOST_IDLE_LOOKS_PER_SECOND = 1.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver().start()
    try:
        yield hook
    finally:
        hook.stop()


def test_an_idle_worker_backs_off_and_a_write_still_wakes_it_at_once(tmp_path: Path, receiver: Receiver) -> None:
    url = f"sqlite:///{tmp_path / 'idle.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    code = uuid.uuid4().hex
    with store.writing() as conn:
        repository.create(conn, "Subscription", uuid.uuid4().hex, {
            "resourceType": "Subscription", "status": "active", "reason": "idle test",
            "criteria": f"Observation?code={code}",
            "channel": {"type": "rest-hook", "endpoint": receiver.url, "payload": "application/fhir+json"}})
    looks: list[float] = []
    lock = threading.Lock()

    @event.listens_for(engine, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if "subscription_queue" in statement:
            with lock:
                looks.append(time.monotonic())

    subscriptions = Subscriptions(store, Settings(database_url=url, auth="off", subscription_poll_ms=POLL_MS,
                                                  subscription_idle_poll_ms=IDLE_POLL_MS))
    subscriptions.start()
    try:
        time.sleep(1.6)  # backing off: 50, 100, 200, 400, 800 ms …
        start = time.monotonic()
        time.sleep(4.0)
        with lock:
            counted = [at for at in looks if at >= start]
        assert looks, "the worker never looked at the queue"
        assert len(counted) <= MOST_IDLE_LOOKS_PER_SECOND * 4.0, f"{len(counted)} looks in 4 s while idle"

        with store.writing() as conn:
            written = repository.create(conn, "Observation", uuid.uuid4().hex, {
                "resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "urn:test", "code": code}]}})
        sent = time.monotonic()
        [notification] = receiver.wait_for(1, timeout=10)
        assert notification.path == f"/hook/Observation/{written.res_id}"
        assert notification.at - sent < 1.0, "an idle worker's own write waited for a poll"
    finally:
        subscriptions.stop()
        engine.dispose()
