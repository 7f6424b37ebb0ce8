"""The server runs stored pull definitions on their schedule (``FHIRFUS_PULL_SCHEDULE`` > 0).

Every ``interval`` seconds a background thread looks for definitions whose ``next_run`` has come
and runs them one after the other. Several server processes may run schedulers on one database:
a definition is claimed by moving its ``next_run`` forward in a guarded UPDATE, so only one of
them runs it; one that dies mid-pull leaves the watermark where it was and the next run
converges (``fhirfus.pull.run``). Errors are kept in the definition's row (``fhirfus pull list``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fhirfus.errors import FhirError
from fhirfus.pull import definitions
from fhirfus.pull.client import MAX_FILE_BYTES
from fhirfus.pull.run import PullReport, pull_once
from fhirfus.store.repository import Store

log = logging.getLogger(__name__)


class PullScheduler:
    def __init__(self, store: Store, work_dir: Path, interval: float, clock: Callable[[], datetime], *,
                 max_file_bytes: int = MAX_FILE_BYTES, hub_base: str = "") -> None:
        self.store = store
        self.hub_base = hub_base
        self.max_file_bytes = max_file_bytes
        self.work_dir = work_dir
        self.interval = interval
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fhirfus-pulls", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_due()
            except Exception:  # the schedule outlives one bad round (the database away for a moment)
                log.exception("scheduled pulls failed")

    def run_due(self) -> list[PullReport]:
        """Run every due definition this process could claim; the reports of those that worked."""
        reports = []
        for definition in definitions.due(self.store, self.clock()):
            if not definitions.claim(self.store, definition, self.clock()):
                continue  # another process runs it
            try:
                reports.append(pull_once(self.store, definition, self.work_dir, self.clock,
                                           max_file_bytes=self.max_file_bytes, hub_base=self.hub_base))
            except FhirError as exc:  # recorded in the definition's row by pull_once
                log.warning("scheduled pull %s failed: %s", definition.name, exc.message)
        return reports
