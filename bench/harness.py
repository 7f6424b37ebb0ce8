"""The shared harness of ``make bench``: measurements, CPU meters, load generators, servers, databases.

Every benchmark in ``bench/`` imports it (``bench/`` leads ``sys.path`` when a benchmark runs as a
script). It times and meters; it never asserts. Results go to ``bench-results/bench.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import itertools
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request  # module level: FastAPI resolves the endpoints' annotations here

from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.db.tables import resources
from fhirfus.settings import test_postgres_url
from fhirfus.store import repository
from fhirfus.store.repository import NewResource, Store
from fhirfus.testing import NotReady, free_port, scratch_postgres, wait_until_ready

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench-results" / "bench.md"
#: ``fhirfus serve --workers``: one process per core, as a Python server is deployed (one process
#: runs Python on one core at a time).
DEFAULT_WORKERS = os.cpu_count() or 1
POSTGRES_URL = test_postgres_url()
RES_TYPE = "Observation"
SEED = 20260101
BATCH_ROWS = 500
START_TIMEOUT_S = 60.0
HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}

#: The aims of the issues (PostgreSQL, 4 keep-alive clients, server and load generator on 2 cores;
#: creates with full validation: #21).
AIM_CREATE_RATE = 600.0
AIM_READ_SHARE = 0.80
AIM_READ_P95_MS = 10.0
#: Above this share of the busy CPU taken by other work, a backend's figures get a warning.
NOISY_SHARE = 0.15

#: Wide enough when piped (make bench | tee) that the tables stay one line per row.
console = Console(width=None if sys.stdout.isatty() else 170)


class BenchError(RuntimeError):
    """A backend could not be measured (server did not start, database unreachable, …)."""


# --- counts and options ----------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """Requests per phase; fixed numbers (not durations) so two runs do the same work."""

    warmup: int
    creates: int
    reads: int
    updates: int


FULL = Counts(warmup=200, creates=2000, reads=4000, updates=2000)
QUICK = Counts(warmup=50, creates=300, reads=600, updates=300)


@dataclass(frozen=True)
class Options:
    counts: Counts
    clients: int
    loadgen: str
    backends: tuple[str, ...]
    output: Path
    #: worker processes of fhirfus and of the bare endpoint alike (issue 21: the same workers)
    workers: int = 1


# --- payloads --------------------------------------------------------------------------------

_TWSTRS = "https://fhirfus.example.org/CodeSystem/twstrs"
_SUBSCALES = (("severity", "TWSTRS severity", 35), ("disability", "TWSTRS disability", 30), ("pain", "TWSTRS pain", 20))


#: Patients (and encounters) the benchmark Observations refer to; ``seed_references`` stores them,
#: since a write whose references resolve to nothing is refused.
_PEOPLE = 211


def referenced_resources() -> list[dict[str, Any]]:
    """What ``observation`` refers to: its patients, encounters and the practitioner."""
    patients = [{"resourceType": "Patient", "id": f"p-{i:04d}", "gender": "female"} for i in range(_PEOPLE)]
    encounters = [{"resourceType": "Encounter", "id": f"e-{i:04d}", "status": "finished",
                   "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                   "subject": {"reference": f"Patient/p-{i:04d}"}} for i in range(_PEOPLE)]
    return [*patients, *encounters, {"resourceType": "Practitioner", "id": "neurologist-7"}]


def seed_references(url: str) -> None:
    """Store ``referenced_resources`` in the (migrated) database at ``url``."""
    engine = make_engine(url)
    try:
        with Store(engine).writing() as conn:
            repository.create_many(conn, [NewResource(r["resourceType"], r["id"], r) for r in referenced_resources()])
    finally:
        engine.dispose()


def observation(index: int, rng: random.Random) -> dict[str, Any]:
    """A ~1 KB TWSTRS score Observation: identifier, category, code, subject, quantity, components.

    Realistic enough that validation, required bindings and the search indexer all have work.
    """
    total = 0
    components = []
    for code, display, maximum in _SUBSCALES:
        value = rng.randint(0, maximum)
        total += value
        components.append(
            {"code": {"coding": [{"system": _TWSTRS, "code": code, "display": display}]}, "valueInteger": value}
        )
    day = 1 + index % 28
    return {
        "resourceType": RES_TYPE,
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.7418.1", "value": f"obs-{index:07d}"}],
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "survey", "display": "Survey",
        }]}],
        "code": {"coding": [{"system": _TWSTRS, "code": "total", "display": "TWSTRS total score"}],
                 "text": "Toronto Western Spasmodic Torticollis Rating Scale"},
        "subject": {"reference": f"Patient/p-{index % _PEOPLE:04d}", "display": f"Study participant {index % _PEOPLE}"},
        "encounter": {"reference": f"Encounter/e-{index % _PEOPLE:04d}"},
        "effectiveDateTime": f"2025-{1 + index % 12:02d}-{day:02d}T09:{index % 60:02d}:00+01:00",
        "issued": f"2025-{1 + index % 12:02d}-{day:02d}T10:15:00Z",
        "performer": [{"reference": "Practitioner/neurologist-7"}],
        "valueQuantity": {"value": total, "unit": "score", "system": "http://unitsofmeasure.org", "code": "{score}"},
        "note": [{"text": "Assessed 3 months after MRgFUS pallidothalamic tractotomy; head tremor reduced."}],
        "component": components,
    }


def payloads(count: int, offset: int, rng: random.Random) -> list[dict[str, Any]]:
    return [observation(offset + i, rng) for i in range(count)]


def updated(document: dict[str, Any], res_id: str) -> dict[str, Any]:
    """The same resource with its id (as PUT requires) and a changed score."""
    changed = dict(document, id=res_id)
    changed["valueQuantity"] = dict(document["valueQuantity"], value=document["valueQuantity"]["value"] + 1)
    return changed


# --- measurements ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What to meter besides this process: the server process and the PostgreSQL database."""

    server_pid: int | None = None
    database: str | None = None  # its backends' CPU is the database's share (SQLite: in-process)


@dataclass(frozen=True)
class CpuUsage:
    """CPU seconds used during a phase by the server, this process, the database and the machine."""

    server_s: float | None
    loadgen_s: float
    database_s: float | None
    machine_busy: float | None  # fraction of all cores
    machine_s: float | None  # busy CPU seconds of all cores together

    @property
    def other_s(self) -> float | None:
        """Busy CPU nobody here accounts for: other work on the machine, shared PostgreSQL writers."""
        if self.machine_s is None:
            return None
        return max(0.0, self.machine_s - (self.server_s or 0.0) - self.loadgen_s - (self.database_s or 0.0))


@dataclass
class Measurement:
    label: str
    count: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    cpu: CpuUsage | None = None

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float | None:
        """Nearest-rank percentile in milliseconds (None without per-operation latencies)."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(q * len(ordered)))
        return ordered[rank - 1] * 1000

    def cpu_ms_per_op(self, seconds: float | None) -> float | None:
        return None if seconds is None or not self.count else seconds * 1000 / self.count


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (the worker processes of ``fhirfus serve --workers N``)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _process_cpu_s(pid: int | None) -> float | None:
    """utime + stime of a process and its live descendants from /proc (None without /proc)."""
    if pid is None:
        return None
    total = 0.0
    for member in (pid, *_descendants(pid)):
        fields = _stat_fields(member)
        if fields is None:
            if member == pid:
                return None
            continue
        total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return total


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores; idle and iowait count as not busy."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    total = sum(values[:8])
    return total - values[3] - values[4], total


def _postgres_backends_cpu_s(database: str | None) -> float | None:
    """CPU of the local PostgreSQL backends connected to ``database`` (None if none are visible).

    Backends name their database in their process title (``postgres: … user database host``).
    Backends that exited during the phase are missed; the pools here keep theirs open.
    """
    if database is None:
        return None
    marker, total, found = f" {database} ".encode(), 0.0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if title.startswith(b"postgres:") and marker in title:
            total += _process_cpu_s(int(entry.name)) or 0.0
            found = True
    return total if found else None


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


@contextmanager
def cpu_meter(probe: Probe) -> Iterator[list[CpuUsage]]:
    """Yields a list that holds the CpuUsage of the block once it ends."""
    out: list[CpuUsage] = []
    server0, database0 = _process_cpu_s(probe.server_pid), _postgres_backends_cpu_s(probe.database)
    loadgen0, machine0 = time.process_time(), _machine_ticks()
    yield out
    loadgen1, machine1 = time.process_time(), _machine_ticks()
    server1, database1 = _process_cpu_s(probe.server_pid), _postgres_backends_cpu_s(probe.database)
    busy = busy_s = None
    if machine0 and machine1 and machine1[1] > machine0[1]:
        busy = (machine1[0] - machine0[0]) / (machine1[1] - machine0[1])
        busy_s = (machine1[0] - machine0[0]) / _CLOCK_TICKS
    out.append(CpuUsage(_delta(server0, server1), loadgen1 - loadgen0, _delta(database0, database1), busy, busy_s))


# --- driving concurrent work -----------------------------------------------------------------

#: One unit of work: (worker index, job index) → None when it went well, else what went wrong.
Operation = Callable[[int, int], "str | None"]


def drive_threads(
    workers: int, count: int, operation: Operation, label: str, probe: Probe, budget_s: float | None = None
) -> Measurement:
    """Run ``count`` jobs on ``workers`` threads pulling from one shared counter; time each job.

    ``next()`` on an ``itertools.count`` is atomic under the GIL, so no lock is needed. A job that
    raises counts as an error (a dead server shows up as errors, not as a traceback mid-table);
    Ctrl-C stops the workers after their current job instead of letting them finish the phase.
    With ``budget_s`` no job starts after that many seconds, and the measurement counts the jobs
    done (a query whose plan goes wrong on a large database then cannot run for an hour).
    """
    counter = itertools.count()
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(workers)]
    errors: list[list[str]] = [[] for _ in range(workers)]

    def work(worker: int) -> None:
        own_latencies, own_errors = latencies[worker], errors[worker]
        deadline = started + budget_s if budget_s is not None else float("inf")
        while not stop.is_set() and time.perf_counter() < deadline and (job := next(counter)) < count:
            start = time.perf_counter()
            try:
                problem = operation(worker, job)
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            own_latencies.append(time.perf_counter() - start)
            if problem is not None:
                own_errors.append(problem)

    with ThreadPoolExecutor(max_workers=workers) as pool, cpu_meter(probe) as cpu:
        started = time.perf_counter()
        try:
            for future in [pool.submit(work, w) for w in range(workers)]:
                future.result()
        except BaseException:
            stop.set()
            raise
        seconds = time.perf_counter() - started
    done = sum(len(per_worker) for per_worker in latencies)
    return _measurement(label, done, seconds, latencies, errors, cpu[0])


def _measurement(
    label: str, count: int, seconds: float, latencies: list[list[float]], errors: list[list[str]], cpu: CpuUsage
) -> Measurement:
    flat_errors = [e for per_worker in errors for e in per_worker]
    return Measurement(
        label, count, seconds, [x for per_worker in latencies for x in per_worker],
        len(flat_errors), flat_errors[0] if flat_errors else None, cpu,
    )


# --- the HTTP load generator -----------------------------------------------------------------


@dataclass(frozen=True)
class HttpCall:
    method: str
    path: str
    body: bytes | None
    expect: int


_LOCATION = re.compile(r"/([^/]+)/_history/\d+$")


def _check(call: HttpCall, status: int, location: str | None, ids: list[str | None], job: int) -> str | None:
    if status != call.expect:
        return f"{call.method} {call.path} → {status} (expected {call.expect})"
    if call.method == "POST":
        match = _LOCATION.search(location or "")
        if match is None:
            return f"POST {call.path} → no Location header"
        ids[job] = match.group(1)
    return None


class LoadGenerator(Protocol):
    def run(
        self, label: str, calls: Sequence[HttpCall], probe: Probe
    ) -> tuple[Measurement, list[str | None]]:
        """Send every call once over the clients; return the measurement and created ids by job."""
        ...

    def close(self) -> None: ...


class ThreadedLoad:
    """N threads, each with its own keep-alive ``httpx.Client``.

    The default because it generates more load on 2 cores than asyncio: the sync httpx/httpcore
    path costs less client CPU per request than the anyio-based async one (measured here against
    the bare endpoint: ~0.33 ms and 2,200-3,200 requests/s with threads, ~0.6 ms and 1,600-1,950/s
    with ``httpx.AsyncClient``), and the load generator competes with the server for those cores.
    Threads mostly wait on sockets with the GIL released, so 4 threads keep 4 requests in flight.
    ``--loadgen async`` is there to re-check that choice.
    """

    def __init__(self, base: str, clients: int) -> None:
        # Idle connections are dropped after 2 s: between alternating rounds one server's clients wait
        # for seconds, and a request sent just as uvicorn closes an idle connection (after 5 s) fails.
        limits = httpx.Limits(keepalive_expiry=2.0)
        self._clients = [httpx.Client(base_url=base, headers=HEADERS, timeout=60, limits=limits) for _ in range(clients)]

    def run(
        self, label: str, calls: Sequence[HttpCall], probe: Probe
    ) -> tuple[Measurement, list[str | None]]:
        ids: list[str | None] = [None] * len(calls)

        def operation(worker: int, job: int) -> str | None:
            call = calls[job]
            response = self._clients[worker].request(call.method, call.path, content=call.body)
            return _check(call, response.status_code, response.headers.get("location"), ids, job)

        return drive_threads(len(self._clients), len(calls), operation, label, probe), ids

    def close(self) -> None:
        for client in self._clients:
            client.close()


class AsyncLoad:
    """N ``httpx.AsyncClient`` tasks on one event loop kept alive across phases (asyncio.Runner)."""

    def __init__(self, base: str, clients: int) -> None:
        self._runner = asyncio.Runner()
        self._clients = [httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=60) for _ in range(clients)]

    def run(
        self, label: str, calls: Sequence[HttpCall], probe: Probe
    ) -> tuple[Measurement, list[str | None]]:
        return self._runner.run(self._run(label, calls, probe))

    async def _run(
        self, label: str, calls: Sequence[HttpCall], probe: Probe
    ) -> tuple[Measurement, list[str | None]]:
        ids: list[str | None] = [None] * len(calls)
        counter = itertools.count()
        latencies: list[list[float]] = [[] for _ in self._clients]
        errors: list[list[str]] = [[] for _ in self._clients]

        async def work(worker: int) -> None:
            client = self._clients[worker]
            while (job := next(counter)) < len(calls):
                call = calls[job]
                start = time.perf_counter()
                try:
                    response = await client.request(call.method, call.path, content=call.body)
                    problem = _check(call, response.status_code, response.headers.get("location"), ids, job)
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                latencies[worker].append(time.perf_counter() - start)
                if problem is not None:
                    errors[worker].append(problem)

        with cpu_meter(probe) as cpu:
            start = time.perf_counter()
            await asyncio.gather(*(work(w) for w in range(len(self._clients))))
            seconds = time.perf_counter() - start
        return _measurement(label, len(calls), seconds, latencies, errors, cpu[0]), ids

    def close(self) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(client.aclose() for client in self._clients))

        try:
            self._runner.run(close_all())
        finally:
            self._runner.close()


@contextmanager
def load_generator(kind: str, base: str, clients: int) -> Iterator[LoadGenerator]:
    load: LoadGenerator = AsyncLoad(base, clients) if kind == "async" else ThreadedLoad(base, clients)
    try:
        yield load
    finally:
        load.close()


# --- subprocesses ----------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the bench is killed hard, so no server outlives it."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class RunningServer:
    base: str
    pid: int


@contextmanager
def server_process(command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[RunningServer]:
    """Start ``command``, wait until /fhir/metadata answers, always stop it afterwards.

    Its own session keeps Ctrl-C from reaching it directly: it is stopped here, in order,
    before the database it uses is dropped.
    """
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
    try:
        base = f"http://127.0.0.1:{port}/fhir"
        _wait_ready(process, base, log)
        yield RunningServer(base, process.pid)
    finally:
        _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    try:
        wait_until_ready(f"{base}/metadata", process, START_TIMEOUT_S)
    except NotReady as error:
        raise BenchError(f"server {error}:\n{_tail(log)}") from error


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def fhirfus_command() -> list[str]:
    """The installed ``fhirfus`` script next to this interpreter, else the module."""
    script = Path(sys.executable).with_name("fhirfus")
    prefix = [str(script)] if script.exists() else [sys.executable, "-m", "fhirfus.cli"]
    return prefix


@contextmanager
def fhirfus_server(database_url: str, workdir: Path, workers: int = 1) -> Iterator[RunningServer]:
    port = free_port()
    env = dict(os.environ, FHIRFUS_DATABASE_URL=database_url, FHIRFUS_AUTH="off")
    command = [*fhirfus_command(), "serve", "--port", str(port), "--no-migrate", "--workers", str(workers)]
    with server_process(command, env, port, workdir / f"fhirfus-{port}.log") as running:
        yield running


@contextmanager
def bare_server(database_url: str, res_id: str, workdir: Path, workers: int = 1) -> Iterator[RunningServer]:
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--bare-server", str(port),
               "--database-url", database_url, "--resource-id", res_id, "--workers", str(workers)]
    with server_process(command, dict(os.environ), port, workdir / f"bare-{port}.log") as running:
        yield running


# --- the bare FastAPI ceiling (runs in its own process) --------------------------------------


def serve_bare(port: int, database_url: str, res_id: str, workers: int = 1) -> None:
    """The bare endpoint (``bare_app``) in this process, or in ``workers`` forked children sharing
    one listening socket (as ``fhirfus serve --workers`` shares its port)."""
    import uvicorn

    if workers <= 1:
        app, engine = bare_app(database_url, res_id)
        try:
            uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        finally:
            engine.dispose()
        return
    import multiprocessing
    import socket

    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind(("127.0.0.1", port))
    listening.listen(2048)
    children = [multiprocessing.get_context("fork").Process(target=_bare_worker, args=(listening, database_url, res_id))
                for _ in range(workers)]
    for child in children:
        child.start()

    def stop(_signum: int, _frame: object) -> None:
        for child in children:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    for child in children:
        child.join()


def _bare_worker(listening: Any, database_url: str, res_id: str) -> None:
    import uvicorn

    app, engine = bare_app(database_url, res_id)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[listening])
    finally:
        engine.dispose()


def bare_app(database_url: str, res_id: str) -> tuple[Any, Any]:
    """One GET endpoint returning a document read once from the database (the read ceiling), and one
    POST endpoint storing the posted document as fhirfus stores a create (the create ceiling).

    Same uvicorn defaults as ``fhirfus serve`` (uvloop, httptools, no access log), the same URL
    shape and bytes, and an ``async def`` read (no thread-pool hop): nothing FHIR-specific is left,
    so no FHIR read can be faster on this machine. The create parses the JSON, stamps id and meta,
    and writes the current row and the history row in one transaction on a pooled connection from
    the thread pool (as fhirfus's writes run), answering 201 with ``Location``, ``ETag`` and the
    stored body: no validation, no search index, no references, no Subscriptions, no audit.
    """
    import uuid
    from datetime import UTC, datetime

    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response

    from fhirfus.db.tables import resource_history
    from fhirfus.store.repository import stamp

    engine = make_engine(database_url)
    with engine.connect() as conn:
        content = conn.execute(
            select(resources.c.content).where(resources.c.res_type == RES_TYPE, resources.c.res_id == res_id)
        ).scalar_one()
    document = orjson.dumps(content)
    media_type = "application/fhir+json; charset=utf-8"
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/fhir/metadata")
    async def metadata() -> Response:
        return Response(b'{"resourceType":"CapabilityStatement"}', media_type=media_type)

    @app.get("/fhir/{res_type}/{res_id}")
    async def read(res_type: str, res_id: str) -> Response:
        return Response(document, media_type=media_type)

    def store(res_type: str, body: bytes) -> tuple[str, bytes]:
        new_id, moment = str(uuid.uuid4()), datetime.now(UTC)
        stored = stamp(orjson.loads(body), new_id, 1, moment)
        row = {"res_type": res_type, "res_id": new_id, "version": 1, "last_updated": moment, "content": stored}
        with engine.begin() as conn:
            conn.execute(resources.insert().values(**row, deleted=False))
            conn.execute(resource_history.insert().values(**row, method="POST"))
        return new_id, orjson.dumps(stored)

    @app.post("/fhir/{res_type}")
    async def create(res_type: str, request: Request) -> Response:
        new_id, stored = await run_in_threadpool(store, res_type, await request.body())
        return Response(stored, status_code=201, media_type=media_type, headers={
            "Location": f"{request.base_url}fhir/{res_type}/{new_id}/_history/1", "ETag": 'W/"1"'})

    return app, engine


# --- databases -------------------------------------------------------------------------------


@contextmanager
def postgres_databases(count: int) -> Iterator[list[str]]:
    """``count`` throw-away databases (``fhirfus.testing.scratch_postgres``), a clear error if PostgreSQL is not usable."""
    try:
        with scratch_postgres(count, prefix="fhirfus_bench") as urls:
            yield urls
    except SQLAlchemyError as exc:
        safe = make_url(POSTGRES_URL).render_as_string(hide_password=True)
        cause = getattr(exc, "orig", None) or exc
        raise BenchError(f"PostgreSQL at {safe} is not usable: {type(cause).__name__}: {cause}") from exc


@contextmanager
def backend_databases(backend: str, workdir: Path) -> Iterator[tuple[str, str]]:
    """(server database, raw-baseline database): both fresh, so neither run sees the other's rows."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'server.db'}", f"sqlite:///{workdir / 'raw.db'}"
        return
    with postgres_databases(2) as (server_url, raw_url):
        yield server_url, raw_url


def _pg_name(url: str) -> str | None:
    """The PostgreSQL database of ``url`` (whose backends are metered), None for SQLite."""
    parsed = make_url(url)
    return parsed.database if parsed.get_backend_name() == "postgresql" else None


def migrated(url: str) -> None:
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


# --- reporting, shared by every benchmark ----------------------------------------------------


@dataclass
class Report:
    """A table rendered both for the terminal (rich) and for a closing note (Markdown)."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def rich(self) -> Table:
        table = Table(title=self.title, title_justify="left")
        for index, column in enumerate(self.columns):
            table.add_column(column, justify="left" if index == 0 else "right")
        for row in self.rows:
            table.add_row(*(escape(cell) for cell in row))
        return table

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(self.columns) - 1)) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows]
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def _git_revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def _terminate_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` stops servers and drops databases."""

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":  # the bare FastAPI ceiling in its own process, started by ``bare_server``
    _ceiling = argparse.ArgumentParser()
    _ceiling.add_argument("--bare-server", type=int, required=True)
    _ceiling.add_argument("--database-url", required=True)
    _ceiling.add_argument("--resource-id", required=True)
    _ceiling.add_argument("--workers", type=int, default=1)
    _args = _ceiling.parse_args()
    serve_bare(_args.bare_server, _args.database_url, _args.resource_id, _args.workers)
