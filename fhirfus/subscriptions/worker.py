"""The delivery worker of one server process.

A supervisor thread wakes when this process committed a write (``Matcher.committed``) or every
poll interval (other processes' writes, retries that came due), finds the Subscriptions whose head
notification is due and free, and hands each to a small thread pool, which delivers that
Subscription's notifications one after another until its queue is empty or one fails. A failure
is retried after ``retry * 2**(attempts-1)`` (at most ``MAX_BACKOFF``); after ``attempts`` failures
in a row the Subscription is set to ``status`` ``error`` with the reason in ``error``, and its
notifications wait in the queue until someone makes it active again (a new ``requested``
version). The queue lives in the database, so it survives restarts; leases keep two processes
from delivering one Subscription at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from fhirfus.db.visibility import EVERYTHING
from fhirfus.store import repository
from fhirfus.store.repository import Store
from fhirfus.subscriptions import delivery, queue
from fhirfus.subscriptions.active import ActiveSubscriptions

log = logging.getLogger("fhirfus.subscriptions")

MAX_BACKOFF = timedelta(minutes=5)
THREADS = 4


@dataclass(frozen=True)
class DeliveryPolicy:
    attempts: int
    retry: timedelta
    timeout: float
    poll: float
    allow_private: bool
    server_key: str | None

    @property
    def lease(self) -> timedelta:
        """Longer than one delivery can take, so a live owner never loses its notification."""
        return timedelta(seconds=2 * self.timeout + 5)

    def backoff(self, attempts: int) -> timedelta:
        return min(MAX_BACKOFF, self.retry * (2 ** max(0, attempts - 1)))


class SubscriptionWorker:
    def __init__(self, store: Store, active: ActiveSubscriptions, policy: DeliveryPolicy, *, http: httpx.Client,
                 clock: Callable[[], datetime], wake: threading.Event) -> None:
        self.store = store
        self.active = active
        self.policy = policy
        self.http = http
        self.clock = clock
        self.wake = wake
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="fhirfus-notify")
        self._lock = threading.Lock()
        self._draining: set[str] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

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

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            self.wake.clear()
            try:
                self.tend()
            except Exception:
                log.exception("subscription delivery round failed")
            self.wake.wait(self.policy.poll)

    def tend(self) -> None:
        """One round: start draining every Subscription with a due, free notification."""
        for subscription_id in queue.ready(self.store, self.clock()):
            with self._lock:
                if subscription_id in self._draining or self._stopping.is_set():
                    continue
                self._draining.add(subscription_id)
            self._executor.submit(self._drain, subscription_id)

    def _drain(self, subscription_id: str) -> None:
        try:
            while not self._stopping.is_set() and self.deliver_head(subscription_id):
                pass
        except Exception:
            log.exception("subscription %s: delivery failed unexpectedly", subscription_id)
        finally:
            with self._lock:
                self._draining.discard(subscription_id)

    def deliver_head(self, subscription_id: str) -> bool:
        """Deliver the Subscription's head notification; whether the next one may follow at once."""
        moment = self.clock()
        head = queue.take_head(self.store, subscription_id, self.owner, moment, moment + self.policy.lease)
        if head is None:
            return False
        with self.store.reading() as conn:
            subscription = self.active.get(conn, subscription_id)
            stored = repository.current(conn, EVERYTHING, "Subscription", subscription_id)
            version = repository.version(conn, EVERYTHING, head.res_type, head.res_id, head.version) \
                if subscription is not None and subscription.channel.payload == "full-resource" else None
        if subscription is None:
            if stored is None or stored.deleted:
                queue.drop_subscription(self.store, subscription_id)
            else:
                queue.release(self.store, head.pk, self.owner)  # off or in error: it waits
            return False
        request = delivery.request_for(subscription, head.res_type, head.res_id, head.version,
                                       version.content if version is not None else None, self.policy.server_key)
        try:
            delivery.send(self.http, request, self.policy.timeout, allow_private=self.policy.allow_private)
        except delivery.DeliveryFailed as exc:
            self._failed(subscription_id, head, str(exc))
            return False
        queue.delivered(self.store, head.pk, self.owner)
        return True

    def _failed(self, subscription_id: str, head: queue.Queued, reason: str) -> None:
        attempts = head.attempts + 1
        log.info("subscription %s: delivery %d failed: %s", subscription_id, attempts, reason)
        if attempts < self.policy.attempts:
            queue.failed(self.store, head.pk, self.owner, attempts, self.clock() + self.policy.backoff(attempts), reason)
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
        self.active.invalidate()
