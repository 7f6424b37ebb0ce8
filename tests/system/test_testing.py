"""``fhirfus.testing.wait_until_ready``: the one wait-until-a-server-answers loop of the tests, the
scale-out hosts and the benchmarks."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fhirfus.testing import NotReady, free_port, wait_until_ready


def _python(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_returns_once_the_server_answers() -> None:
    port = free_port()
    process = _python("-m", "http.server", str(port), "--bind", "127.0.0.1")
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/", process, 30, interval=0.05)
    finally:
        process.kill()
        process.wait()


def test_a_process_that_exits_is_not_waited_for() -> None:
    process = _python("-c", "raise SystemExit(3)")
    started = time.monotonic()
    with pytest.raises(NotReady, match="exited with status 3"):
        wait_until_ready(f"http://127.0.0.1:{free_port()}/", process, 30, interval=0.05)
    assert time.monotonic() - started < 20


def test_a_silent_server_times_out() -> None:
    process = _python("-c", "import time; time.sleep(60)")
    try:
        with pytest.raises(NotReady, match="did not answer"):
            wait_until_ready(f"http://127.0.0.1:{free_port()}/", process, 0.3, interval=0.05)
    finally:
        process.kill()
        process.wait()
