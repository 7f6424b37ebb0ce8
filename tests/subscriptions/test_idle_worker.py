"""An idle delivery worker hardly queries, and a write still wakes it at once.

The worker looks at the queue every ``FHIRFUS_SUBSCRIPTION_POLL_MS`` while there is work, and
backs off (the wait doubling) up to ``FHIRFUS_SUBSCRIPTION_IDLE_POLL_MS`` while there is none.
Its looks are counted as the queries it sends on ``subscription_queue``, not as CPU time (which
other work on the machine blurs). On PostgreSQL another process's queued notifications wake it too
(``LISTEN``/``NOTIFY``), so a backed-off worker still delivers them at once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import event

from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.settings import Settings
from fhirfus.store import repository
from fhirfus.store.repository import Store
from fhirfus.subscriptions.service import Subscriptions, queue_writes
from fhirfus.testing import Receiver, scratch_postgres

POLL_MS = 50
IDLE_POLL_MS = 3000
#: The most looks an idle worker may take per second (at ``POLL_MS`` it would take 20).
MOST_IDLE_LOOKS_PER_SECOND = 1.0


def _subscribe(store: Store, code: str, endpoint: str) -> None:
    with store.writing() as conn:
        repository.create(conn, "Subscription", uuid.uuid4().hex, {
            "resourceType": "Subscription", "status": "active", "reason": "idle test",
            "criteria": f"Observation?code={code}",
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"}})


def _observe(store: Store, code: str) -> str:
    with store.writing() as conn:
        return repository.create(conn, "Observation", uuid.uuid4().hex, {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "urn:test", "code": code}]}}).res_id


def _arrives_at_once(receiver: Receiver, write: Callable[[], str], waited: str) -> None:
    """``write`` an Observation; its notification must reach ``receiver`` within a second."""
    written = write()
    sent = time.monotonic()
    [notification] = receiver.wait_for(1, timeout=10)
    assert notification.path == f"/hook/Observation/{written}"
    assert notification.at - sent < 1.0, waited


def test_an_idle_worker_backs_off_and_a_write_still_wakes_it_at_once(tmp_path: Path, receiver: Receiver) -> None:
    url = f"sqlite:///{tmp_path / 'idle.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    code = uuid.uuid4().hex
    _subscribe(store, code, receiver.url)
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

        _arrives_at_once(receiver, lambda: _observe(store, code), "an idle worker's own write waited for a poll")
    finally:
        subscriptions.stop()
        engine.dispose()


def test_another_processs_write_wakes_an_idle_worker_on_postgresql(receiver: Receiver) -> None:
    with scratch_postgres() as (url,):
        engine, writer = make_engine(url), make_engine(url)  # the server's, and a command line's
        try:
            migrate.upgrade(engine)
            code = uuid.uuid4().hex
            _subscribe(Store(engine), code, receiver.url)
            settings = Settings(database_url=url, auth="off", subscription_poll_ms=1000,
                                subscription_idle_poll_ms=60_000)  # rounds at 0, 1, 3, 7 … s
            subscriptions = Subscriptions(Store(engine), settings)
            subscriptions.start()
            try:
                time.sleep(3.3)  # backed off: its next round is seconds away
                other = Store(writer)
                queue_writes(other, settings)  # as ``fhirfus load`` does
                _arrives_at_once(receiver, lambda: _observe(other, code), "another process's write waited for a poll")
            finally:
                subscriptions.stop()
        finally:
            engine.dispose()
            writer.dispose()
