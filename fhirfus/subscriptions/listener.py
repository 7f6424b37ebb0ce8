"""Wake-ups across processes on PostgreSQL: ``LISTEN`` for what a writer that does not deliver
(``fhirfus load``, imports from the command line) announces with ``NOTIFY`` when it queues
notifications, so an idle server's worker looks at once instead of at its next, backed-off, poll.

The poll stays the fallback (SQLite has no such channel, and a notice sent while the listening
connection was down is lost).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

log = logging.getLogger("fhirfus.subscriptions")

#: How the listening connection shows in ``pg_stat_activity`` (unless the URL names one).
LISTENER_NAME = "fhirfus-subscriptions"
#: The channel of ``NOTIFY``: notifications were queued.
CHANNEL = "fhirfus_subscription_queue"
#: Seconds between two checks whether to stop, while no notice comes.
CHECK_STOP = 1.0
#: Seconds before a lost listening connection is made again.
RECONNECT = 5.0


class QueueListener:
    """Calls ``on_notice`` for each notice on ``CHANNEL``, on a daemon thread of its own connection."""

    def __init__(self, address: str, on_notice: Callable[[], None]) -> None:
        self.address = address
        self.on_notice = on_notice
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fhirfus-subscriptions-listen", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.address, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        for _notice in conn.notifies(timeout=CHECK_STOP):
                            self.on_notice()
            except Exception:
                log.warning("listening for queued notifications failed; polling meanwhile", exc_info=True)
                self._stop.wait(RECONNECT)
