"""How a server worker process lives and dies with the process that started it."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_supervisor() -> None:
    """A worker spawned by ``fhirfus serve --workers N`` is killed when its supervisor dies.

    uvicorn's supervisor stops its workers when it is stopped, but a supervisor killed outright
    (``kill -9``, the OOM killer) would leave them serving on the port, and running jobs, as a
    server nobody started. Linux's parent-death signal ends them with it. A process that was not
    spawned by another Python process (a test's in-process server, one worker) is left alone.
    """
    if multiprocessing.parent_process() is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
