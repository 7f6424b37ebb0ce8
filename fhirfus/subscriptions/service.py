"""Subscriptions of one process: the write observer on its store, its delivery worker and (on
PostgreSQL) the listener that wakes the worker when another process queued notifications."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from fhirfus.db.engine import libpq_address
from fhirfus.settings import Settings
from fhirfus.store.repository import Store
from fhirfus.subscriptions.active import ActiveSubscriptions
from fhirfus.subscriptions.listener import LISTENER_NAME, QueueListener
from fhirfus.subscriptions.matching import Matcher
from fhirfus.subscriptions.worker import DeliveryPolicy, SubscriptionWorker


def utc_now() -> datetime:
    return datetime.now(UTC)


def queue_writes(store: Store, settings: Settings, clock: Callable[[], datetime] = utc_now) -> Matcher:
    """Queue the notifications of every write of ``store`` (delivered by whichever server process
    looks next): for a process that writes but does not deliver, like the CLI's imports."""
    matcher = Matcher(ActiveSubscriptions(settings.base_url or ""), clock, threading.Event(),
                      max_per_site=settings.subscription_max_per_site, announce=True)
    store.observe("subscriptions", matcher)
    return matcher


class Subscriptions:
    """Matches every write of ``store`` (from construction on); delivers between ``start`` and ``stop``."""

    def __init__(self, store: Store, settings: Settings, *, http: httpx.Client | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        poll = max(0.01, settings.subscription_poll_ms / 1000)
        self.active = ActiveSubscriptions(settings.base_url or "")
        self.wake = threading.Event()
        self.matcher = Matcher(self.active, clock, self.wake, max_per_site=settings.subscription_max_per_site)
        store.observe("subscriptions", self.matcher)
        self._own_http = http is None
        self.http = http or httpx.Client(follow_redirects=False)
        policy = DeliveryPolicy(
            attempts=max(1, settings.subscription_attempts),
            retry=timedelta(milliseconds=max(0, settings.subscription_retry_ms)),
            timeout=max(0.1, settings.subscription_timeout_ms / 1000), poll=poll,
            idle_poll=max(poll, settings.subscription_idle_poll_ms / 1000),
            allow_private=settings.subscription_private_targets == "allow", server_key=settings.subscription_key)
        self.worker = SubscriptionWorker(store, self.active, policy, http=self.http, clock=clock, wake=self.wake,
                                         touched=self.matcher.touched)
        address = libpq_address(store.engine, application_name=LISTENER_NAME)
        self.listener = None if address is None else QueueListener(address, self.worker.look_now)

    def start(self) -> None:
        self.worker.start()
        if self.listener is not None:
            self.listener.start()

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        self.worker.stop()
        if self._own_http:
            self.http.close()
