"""`make bench`: notification latency of Subscriptions under a steady write rate, beside the writes alone.

For each backend (a temporary SQLite file; a throw-away PostgreSQL database) it starts the real
server (``fhirfus serve``, one process, authentication off) and a receiver (``fhirfus.testing.Receiver``,
a real HTTP server, in a process of its own), then runs three phases of the same paced writes (POST
Observation at ``--rate`` per second for ``--seconds``, from 4 client threads):

1. ``baseline``: no Subscription — write latency alone;
2. ``not matching``: one active Subscription whose criteria no write matches — the cost of matching;
3. ``matching``: one active Subscription (full-resource payload) that every write matches — write
   latency, and notification latency: from sending the write to the receiver taking the
   notification (the write's own latency included).

A script, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from harness import (  # bench/harness.py: bench/ leads sys.path when a benchmark runs as a script
    RESULTS,
    Report,
    _fmt,
    _git_revision,
    _terminate_on_sigterm,
    backend_databases,
    console,
    fhirfus_server,
    migrated,
)

from fhirfus.testing import Receiver

CLIENTS = 4


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def observation(code: str, n: int) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "urn:bench:subscriptions", "code": code}]},
            "valueQuantity": {"value": n, "unit": "mm"}}


def paced_writes(base: str, code: str, rate: float, seconds: float) -> tuple[dict[str, float], list[float], float]:
    """POST ``rate`` Observations per second for ``seconds``: (id → send time, write latencies, elapsed)."""
    total = int(rate * seconds)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    sessions = [httpx.Client(base_url=base, timeout=30) for _ in range(CLIENTS)]
    started = time.monotonic() + 0.2

    def write(n: int) -> None:
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        began = time.monotonic()
        response = sessions[n % CLIENTS].post("/Observation", json=observation(code, n))
        took = time.monotonic() - began
        if response.status_code == 201:
            with lock:
                sent[response.json()["id"]] = began
                latencies.append(took)

    try:
        with ThreadPoolExecutor(max_workers=CLIENTS * 4) as pool:
            list(pool.map(write, range(total)))
    finally:
        for session in sessions:
            session.close()
    return sent, latencies, time.monotonic() - started


def subscribe(base: str, code: str, endpoint: str) -> None:
    response = httpx.post(base + "/Subscription", json={
        "resourceType": "Subscription", "status": "requested", "reason": "bench",
        "criteria": f"Observation?code=urn:bench:subscriptions|{code}",
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"}}, timeout=30)
    response.raise_for_status()


class ReceiverProcess:
    """A ``Receiver`` in a process of its own (this one is busy generating writes), which appends
    ``monotonic-time path`` to a file for each notification (``time.monotonic`` is one clock for
    every process of the machine)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process = subprocess.Popen([sys.executable, __file__, "--receiver", str(log)], stdout=subprocess.PIPE,
                                        text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()

    def received(self) -> list[tuple[float, str]]:
        if not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()
        return [(float(at), path) for at, path in (line.split(" ", 1) for line in lines if " " in line)]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def serve_receiver(log: Path) -> None:
    receiver = Receiver()
    receiver.start()
    print(receiver.url, flush=True)
    written = 0
    with log.open("a") as out:
        while True:
            with receiver._changed:
                receiver._changed.wait(0.5)
                fresh = receiver.received[written:]
            for note in fresh:
                out.write(f"{note.at} {note.path}\n")
            out.flush()
            written += len(fresh)


def run_backend(backend: str, rate: float, seconds: float, report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="fhirfus-bench-") as tmp, \
            backend_databases(backend, Path(tmp)) as (url, _raw):
        migrated(url)
        receiver = ReceiverProcess(Path(tmp) / "received.log")
        try:
            with fhirfus_server(url, Path(tmp)) as server:
                paced_writes(server.base, "warm-up", rate, 1.0)
                phases = [("baseline (no Subscription)", None), ("1 Subscription, not matching", "never-written"),
                          ("1 Subscription, every write matches", "match")]
                for label, subscribed in phases:
                    code = uuid.uuid4().hex
                    if subscribed is not None:
                        subscribe(server.base, code if subscribed == "match" else subscribed, receiver.url)
                    before = len(receiver.received())
                    sent, latencies, elapsed = paced_writes(server.base, code, rate, seconds)
                    delays: list[float] = []
                    if subscribed == "match":
                        deadline = time.monotonic() + 60
                        while len(receiver.received()) - before < len(sent) and time.monotonic() < deadline:
                            time.sleep(0.2)
                        for at, path in receiver.received()[before:]:
                            res_id = path.rsplit("/", 1)[-1]
                            if res_id in sent:
                                delays.append(at - sent[res_id])
                    report.rows.append([
                        backend, label, f"{len(sent):,}", _fmt(len(sent) / elapsed, 0),
                        _fmt((percentile(latencies, 0.5) or 0) * 1000), _fmt((percentile(latencies, 0.95) or 0) * 1000),
                        "—" if subscribed != "match" else f"{len(delays):,}",
                        "—" if not delays else _fmt((percentile(delays, 0.5) or 0) * 1000),
                        "—" if not delays else _fmt((percentile(delays, 0.95) or 0) * 1000),
                    ])
        finally:
            receiver.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0, help="writes per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--quick", action="store_true", help="3-second phases")
    parser.add_argument("--receiver", type=Path, help=argparse.SUPPRESS)  # run as the receiver process
    args = parser.parse_args()
    if args.receiver is not None:
        serve_receiver(args.receiver)
        return
    seconds = 3.0 if args.quick else args.seconds
    _terminate_on_sigterm()
    report = Report(f"Subscription notifications under {args.rate:.0f} writes/s ({seconds:.0f} s per phase)",
                    ["backend", "phase", "writes", "writes/s", "write p50 ms", "write p95 ms", "notified",
                     "notify p50 ms", "notify p95 ms"])
    load_before = os.getloadavg()[0]
    for backend in ("sqlite", "postgresql"):
        run_backend(backend, args.rate, seconds, report)
    report.notes += [
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores "
        "(other work on the machine shows in every column)",
        "notify: from sending the write to the receiver taking its notification (write latency included)",
        f"one server process, {CLIENTS} client threads, the receiver in a process of its own; revision {_git_revision()}",
    ]
    console.print(report.rich())
    for note in report.notes:
        console.print(f"- {note}")
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as handle:
        handle.write("\n" + report.markdown())


if __name__ == "__main__":
    main()
