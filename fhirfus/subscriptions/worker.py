"""The delivery worker of one server process.

A supervisor thread, every poll interval, finds the Subscriptions whose head notification is due
and free (other processes' writes, retries that came due); in between, when this process commits
a write (``Matcher.committed``), it takes only the Subscriptions that write queued for, without a
query. While nothing happens the interval doubles after each empty round, up to the idle poll, so
an idle server hardly queries; any work, write of this process or failed delivery brings it back
to the poll interval, a retry this process scheduled is looked at when it comes due, and on
PostgreSQL another process's queued notifications wake it too (``listener``). Each Subscription
found is handed to a small thread pool, which delivers that Subscription's notifications batch
after batch until its queue is empty or one fails: within a batch, the notifications of one
resource one after another (version 2 never before version 1), different resources side by side. A failure
is retried after ``retry * 2**(attempts-1)`` (at most ``MAX_BACKOFF``); after ``attempts`` failures
in a row the Subscription is set to ``status`` ``error`` with the reason in ``error``, and its
notifications wait in the queue until someone makes it active again (a new ``requested``
version). The queue lives in the database, so it survives restarts; leases keep two processes
from delivering one Subscription at once.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from fhirfus.db.visibility import EVERYTHING
from fhirfus.domain.subscription import FULL
from fhirfus.store import repository
from fhirfus.store.repository import Store
from fhirfus.subscriptions import delivery, queue
from fhirfus.subscriptions.active import ActiveSubscriptions

log = logging.getLogger("fhirfus.subscriptions")

MAX_BACKOFF = timedelta(minutes=5)
THREADS = 4
#: Requests in flight for one batch: the notifications of different resources go out side by side.
SENDERS = 8
#: Notifications of one Subscription leased together (delivered one by one, removed together).
BATCH = 100
#: Seconds a wake-up waits for more commits before it looks at the queue.
COALESCE = 0.005


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard a worker tries (from the settings): failures before ``error``, first retry wait,
    one request's timeout, poll interval (and the longest one, when idle), whether private addresses
    may be notified, signing key."""

    attempts: int
    retry: timedelta
    timeout: float
    poll: float
    allow_private: bool
    server_key: str | None
    idle_poll: float = 0.0  # at most ``poll`` means: never back off

    @property
    def attempt(self) -> timedelta:
        """The longest one delivery can take."""
        return timedelta(seconds=self.timeout + 1)

    @property
    def lease(self) -> timedelta:
        """How long a batch is a process's: a delivery starts only while a whole attempt fits in
        it, so a live owner never has its notifications taken over."""
        return timedelta(seconds=max(30.0, 3 * self.timeout))

    def backoff(self, attempts: int) -> timedelta:
        return min(MAX_BACKOFF, self.retry * (2 ** max(0, attempts - 1)))


class SubscriptionWorker:
    """Delivers the queued notifications of every active Subscription (see the module docstring)."""

    def __init__(self, store: Store, active: ActiveSubscriptions, policy: DeliveryPolicy, *, http: httpx.Client,
                 clock: Callable[[], datetime], wake: threading.Event, touched: Callable[[], set[str]]) -> None:
        """``wake`` is set after this process committed a write; ``touched`` names the Subscriptions
        its writes queued notifications for since it was last asked."""
        self.touched = touched
        self.store = store
        self.active = active
        self.policy = policy
        self.http = http
        self.clock = clock
        self.wake = wake
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="fhirfus-notify")
        self._senders = ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="fhirfus-notify-send")
        self._lock = threading.Lock()
        self._draining: set[str] = set()
        self._again: set[str] = set()  # draining, and queued for again since: look once more before stopping
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._retries: list[float] = []  # time.monotonic() of the retries this process scheduled, not yet due
        self._look = threading.Event()  # another process queued notifications: a full round now

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._supervise, name="fhirfus-subscriptions", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._senders.shutdown(wait=True, cancel_futures=True)

    def _supervise(self) -> None:
        """Full rounds (``tend``), further apart while they find nothing; in between, on this
        process's commits, only the Subscriptions they queued for (no query at all)."""
        interval = self.policy.poll
        while not self._stopping.is_set():
            try:
                busy = self.tend()
            except Exception:
                log.exception("subscription delivery round failed")
                busy = True
            interval = self.policy.poll if busy else min(max(self.policy.poll, self.policy.idle_poll), interval * 2)
            deadline = time.monotonic() + min(interval, self._until_retry())
            while not self._stopping.is_set() and (left := deadline - time.monotonic()) > 0:
                if self.wake.wait(left):
                    self.wake.clear()
                    self._stopping.wait(COALESCE)  # the commits of the next few moments, looked at once
                    for subscription_id in self.touched():
                        self._start(subscription_id)
                    interval = self.policy.poll  # activity: the next rounds at the working pace
                    deadline = min(deadline, time.monotonic() + min(interval, self._until_retry()))
                    if self._look.is_set():
                        self._look.clear()
                        break

    def look_now(self) -> None:
        """Another process queued notifications (``listener``): a full round at once."""
        self._look.set()
        self.wake.set()

    def _until_retry(self) -> float:
        """Seconds until the next retry this process scheduled (those due are forgotten), else infinity."""
        with self._lock:
            now = time.monotonic()
            self._retries = [at for at in self._retries if at > now]
            return min(self._retries, default=math.inf) - now

    def tend(self) -> bool:
        """One round: Subscriptions the server cannot honour to ``error``; start draining every
        Subscription with a due, free notification. Whether there was anything to do."""
        with self.store.reading() as conn:
            broken = dict(self.active.broken(conn))
        for subscription_id, reason in broken.items():
            self.set_error(subscription_id, reason)
        ready = queue.ready(self.store, self.clock())
        if not ready:
            return bool(broken)
        with self.store.reading() as conn:
            waiting = {sid for sid in ready if self.active.get(conn, sid) is None}  # off, in error, or deleted
            gone = {sid for sid in waiting if (stored := repository.current(conn, EVERYTHING, "Subscription", sid))
                    is None or stored.deleted}
        for subscription_id in gone:
            queue.drop_subscription(self.store, subscription_id)
        for subscription_id in ready:
            if subscription_id not in waiting:
                self._start(subscription_id)
        return True

    def _start(self, subscription_id: str) -> None:
        """Drain a Subscription's queue on the pool, or have its running drain look once more."""
        with self._lock:
            if self._stopping.is_set():
                return
            if subscription_id in self._draining:
                self._again.add(subscription_id)
                return
            self._draining.add(subscription_id)
        self._executor.submit(self._drain, subscription_id)

    def _drain(self, subscription_id: str) -> None:
        while True:
            try:
                while not self._stopping.is_set() and self.deliver_batch(subscription_id):
                    pass
            except Exception:
                log.exception("subscription %s: delivery failed unexpectedly", subscription_id)
            with self._lock:  # one decision with ``_start``'s: a notification queued meanwhile is looked at
                if subscription_id not in self._again or self._stopping.is_set():
                    self._draining.discard(subscription_id)
                    self._again.discard(subscription_id)
                    return
                self._again.discard(subscription_id)

    def deliver_batch(self, subscription_id: str) -> bool:
        """Deliver the Subscription's next notifications: those of one resource one after another,
        oldest first, those of different resources side by side; whether more may follow at once
        (none failed)."""
        moment = self.clock()
        lease_until = moment + self.policy.lease
        batch = queue.take_batch(self.store, subscription_id, self.owner, moment, lease_until, BATCH)
        if not batch:
            return False
        contents: dict[int, repository.Stored | None] = {}
        gone = False
        with self.store.reading() as conn:
            subscription = self.active.get(conn, subscription_id)
            if subscription is None:
                stored = repository.current(conn, EVERYTHING, "Subscription", subscription_id)
                gone = stored is None or stored.deleted
            elif subscription.channel.payload == FULL:
                found = repository.versions(conn, EVERYTHING, [(h.res_type, h.res_id, h.version) for h in batch])
                contents = {h.pk: found.get((h.res_type, h.res_id, h.version)) for h in batch}
        if subscription is None:
            if gone:
                queue.drop_subscription(self.store, subscription_id)
            else:
                queue.release(self.store, [head.pk for head in batch], self.owner)  # off or in error: it waits
            return False
        groups: dict[tuple[str, str], list[queue.Queued]] = {}
        for head in batch:
            groups.setdefault((head.res_type, head.res_id), []).append(head)
        done: list[int] = []  # appended to by the sender threads as each notification is taken
        failures: list[tuple[queue.Queued, str]] = []
        untried: list[int] = []

        def send_in_order(rows: list[queue.Queued]) -> None:
            """The notifications of one resource, oldest first; the first failure stops them."""
            for index, head in enumerate(rows):
                if self._stopping.is_set() or self.clock() + self.policy.attempt >= lease_until:
                    untried.extend(row.pk for row in rows[index:])  # lease them anew
                    return
                version = contents.get(head.pk) if subscription.channel.payload == FULL else None
                request = delivery.request_for(subscription, head.res_type, head.res_id, head.version,
                                               version.content if version is not None else None,
                                               self.policy.server_key)
                try:
                    delivery.send(self.http, request, self.policy.timeout, allow_private=self.policy.allow_private)
                except delivery.DeliveryFailed as exc:
                    failures.append((head, str(exc)))
                    untried.extend(row.pk for row in rows[index + 1:])
                    return
                done.append(head.pk)

        try:
            list(self._senders.map(send_in_order, groups.values()))
        finally:
            queue.delivered(self.store, done, self.owner)
        queue.release(self.store, untried, self.owner)
        for head, reason in failures:
            self._failed(subscription_id, head, reason)
        return not failures and not self._stopping.is_set()

    def _failed(self, subscription_id: str, head: queue.Queued, reason: str) -> None:
        attempts = head.attempts + 1
        log.info("subscription %s: delivery %d failed: %s", subscription_id, attempts, reason)
        if attempts < self.policy.attempts:
            wait = self.policy.backoff(attempts)
            queue.failed(self.store, head.pk, self.owner, attempts, self.clock() + wait, reason)
            with self._lock:
                self._retries.append(time.monotonic() + wait.total_seconds())
            self.wake.set()  # the supervisor's wait is cut to the retry's
            return
        queue.failed(self.store, head.pk, self.owner, 0, self.clock(), reason)
        self.set_error(subscription_id, f"{attempts} deliveries in a row failed; the last: {reason}")

    def set_error(self, subscription_id: str, reason: str) -> None:
        """``status`` ``error`` with the reason: a new version, written as the server."""
        with self.store.writing() as conn:
            previous = repository.current(conn, EVERYTHING, "Subscription", subscription_id, for_update=True)
            if previous is None or previous.deleted or (previous.content or {}).get("status") != "active":
                return
            content = {key: value for key, value in (previous.content or {}).items() if key != "meta"}
            content["meta"] = {k: v for k, v in (previous.content or {}).get("meta", {}).items()
                               if k not in ("versionId", "lastUpdated")}
            repository.replace(conn, previous, {**content, "status": "error", "error": reason[:1000]})
