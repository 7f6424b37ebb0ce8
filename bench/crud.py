"""`make bench`: create/read/update throughput and latency of fhirfus over HTTP, beside baselines.

A script, not a test: it prints figures, it asserts nothing. For each backend (a temporary SQLite
file; a throw-away PostgreSQL database on ``FHIRFUS_TEST_POSTGRES_URL``) it

1. migrates a fresh database and starts the real server (``fhirfus serve --no-migrate``) as a
   separate process, so that the server and the load generator do not share a GIL;
2. drives it with N concurrent keep-alive clients: a warm-up, then creates (POST), reads of
   random created ids (GET) and updates of distinct ids (PUT), recording every latency;
3. starts a bare FastAPI app (``harness.py --bare-server``, as many worker processes as the
   server) whose POST endpoint stores the same documents as a create does (current and history
   row, one transaction, no FHIR logic) and whose GET endpoint returns a document read once from
   the same database, and sends it the same creates and reads: the ceilings that no FHIR create or
   read can beat with this stack on this machine (the reads of both run in rounds, alternating,
   so other work on a shared machine weighs on both alike);
4. inserts, selects and updates the same JSON documents in a second fresh database with
   SQLAlchemy Core and no FHIR logic (one transaction per row, the same way the server opens
   them, and batched): the raw-database baseline.

Server CPU (from /proc) and machine CPU are sampled around every phase so a low rate can be
read as "the server process is saturated" or "something waits". Results are printed as rich
tables and written as Markdown to ``bench-results/bench.md`` for closing notes.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from harness import (  # bench/harness.py: bench/ leads sys.path when a benchmark runs as a script
    AIM_CREATE_RATE,
    AIM_READ_P95_MS,
    AIM_READ_SHARE,
    BATCH_ROWS,
    FULL,
    NOISY_SHARE,
    QUICK,
    RES_TYPE,
    RESULTS,
    SEED,
    BenchError,
    Counts,
    CpuUsage,
    HttpCall,
    LoadGenerator,
    Measurement,
    Options,
    Probe,
    Report,
    _fmt,
    _git_revision,
    _machine_ticks,
    _mark,
    _pg_name,
    _terminate_on_sigterm,
    backend_databases,
    bare_server,
    console,
    cpu_meter,
    drive_threads,
    fhirfus_server,
    load_generator,
    migrated,
    observation,
    payloads,
    seed_references,
    updated,
)
from rich.markup import escape
from sqlalchemy import insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from fhirfus.db.engine import make_engine
from fhirfus.db.tables import resources
from fhirfus.store.repository import Store, stamp

# --- the raw-database baseline ---------------------------------------------------------------


def _row(index: int, document: dict[str, Any]) -> dict[str, Any]:
    """A ``resources`` row as the server would store it (stamped id and meta), built before timing."""
    res_id = f"raw-{index:07d}"
    moment = datetime.now(UTC)
    return {"res_type": RES_TYPE, "res_id": res_id, "version": 1, "last_updated": moment,
            "deleted": False, "content": stamp(document, res_id, 1, moment)}


def raw_baseline(
    url: str, documents: list[dict[str, Any]], counts: Counts, clients: int, probe: Probe
) -> dict[str, Measurement]:
    """Insert, select and update the same documents with SQLAlchemy Core only.

    Writes go through ``Store.writing()`` (the server's transaction scope: ``BEGIN IMMEDIATE`` on
    SQLite), reads through ``Store.reading()``, on as many threads as there are HTTP clients, so
    the only difference to the HTTP figures is FHIR logic, HTTP and the search index. The HTTP
    create also writes a history row; this baseline writes only the ``resources`` row.
    """
    engine = make_engine(url)
    store = Store(engine)
    rng = random.Random(SEED + 1)
    try:
        rows = [_row(i, d) for i, d in enumerate(documents[: counts.creates])]
        warm = [_row(10_000_000 + i, d) for i, d in enumerate(documents[: counts.warmup])]
        batched = [_row(20_000_000 + i, d) for i, d in enumerate(documents[: counts.creates])]
        _raw_inserts(store, warm, clients, "warm-up", probe)
        results = {"insert": _raw_inserts(store, rows, clients, "raw insert, 1 tx/row", probe)}
        results["insert_batched"] = _raw_batched(store, batched, probe)
        keys = {r["res_id"]: pk for r, pk in zip(rows, _pks(store, rows), strict=True)}
        read_ids = [rng.choice(rows)["res_id"] for _ in range(counts.reads)]
        results["select_key"] = _raw_selects(store, read_ids, clients, probe, by_pk=None)
        results["select_pk"] = _raw_selects(store, read_ids, clients, probe, by_pk=keys)
        update_rows = rng.sample(rows, min(counts.updates, len(rows)))
        results["update"] = _raw_updates(store, update_rows, clients, probe)
        return results
    finally:
        engine.dispose()


def _raw_inserts(store: Store, rows: list[dict[str, Any]], clients: int, label: str, probe: Probe) -> Measurement:
    def operation(_worker: int, job: int) -> str | None:
        with store.writing() as conn:
            conn.execute(insert(resources).values(rows[job]))
        return None

    return drive_threads(clients, len(rows), operation, label, probe)


def _raw_batched(store: Store, rows: list[dict[str, Any]], probe: Probe) -> Measurement:
    with cpu_meter(probe) as cpu:
        start = time.perf_counter()
        for offset in range(0, len(rows), BATCH_ROWS):
            with store.writing() as conn:
                conn.execute(insert(resources), rows[offset : offset + BATCH_ROWS])
        seconds = time.perf_counter() - start
    return Measurement(f"raw insert, {BATCH_ROWS} rows/tx", len(rows), seconds, cpu=cpu[0])


def _pks(store: Store, rows: list[dict[str, Any]]) -> list[int]:
    with store.reading() as conn:
        found = dict(conn.execute(
            select(resources.c.res_id, resources.c.pk).where(resources.c.res_id.in_([r["res_id"] for r in rows]))
        ).all())
    return [found[r["res_id"]] for r in rows]


def _raw_selects(
    store: Store, ids: list[str], clients: int, probe: Probe, by_pk: dict[str, int] | None
) -> Measurement:
    def operation(_worker: int, job: int) -> str | None:
        condition: ColumnElement[bool]
        if by_pk is None:
            condition = (resources.c.res_type == RES_TYPE) & (resources.c.res_id == ids[job])
        else:
            condition = resources.c.pk == by_pk[ids[job]]
        with store.reading() as conn:
            content = conn.execute(select(resources.c.content).where(condition)).scalar_one()
        return None if isinstance(content, dict) else f"row {ids[job]} has no document"

    label = "raw select by type+id" if by_pk is None else "raw select by pk"
    return drive_threads(clients, len(ids), operation, label, probe)


def _raw_updates(store: Store, rows: list[dict[str, Any]], clients: int, probe: Probe) -> Measurement:
    bodies = [stamp(updated(r["content"], r["res_id"]), r["res_id"], 2, datetime.now(UTC)) for r in rows]

    def operation(_worker: int, job: int) -> str | None:
        row = rows[job]
        with store.writing() as conn:
            result = conn.execute(
                update(resources)
                .where(resources.c.res_type == RES_TYPE, resources.c.res_id == row["res_id"])
                .values(version=resources.c.version + 1, last_updated=datetime.now(UTC), content=bodies[job])
            )
        return None if result.rowcount == 1 else f"update of {row['res_id']} hit {result.rowcount} rows"

    return drive_threads(clients, len(rows), operation, "raw update, 1 tx/row", probe)


# --- the HTTP phases -------------------------------------------------------------------------


def _encode(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document)


#: Creates and reads are measured in this many rounds, fhirfus and the bare endpoint alternating,
#: so a burst of other work on the shared machine falls on both rather than on one of them.
ROUNDS = 3


def warm_up(load: LoadGenerator, documents: list[dict[str, Any]], counts: Counts, probe: Probe, tag: str) -> list[str]:
    """Warm-up creates and reads; the ids created."""
    path = f"/{RES_TYPE}"
    warm, warm_ids = load.run("warm-up", [HttpCall("POST", path, _encode(d), 201) for d in documents[: counts.warmup]],
                              probe)
    _require_clean(warm, tag)
    load.run("warm-up", [HttpCall("GET", f"{path}/{i}", None, 200) for i in warm_ids if i], probe)
    return [i for i in warm_ids if i]


def create_phases(
    fhirfus: tuple[LoadGenerator, Probe], bare: tuple[LoadGenerator, Probe], documents: list[dict[str, Any]],
    counts: Counts, tag: str,
) -> tuple[Measurement, Measurement, list[tuple[str, dict[str, Any]]]]:
    """The same creates against fhirfus and the bare endpoint, in alternating rounds (the bare one
    warmed up first); the measurements and the (id, document) pairs fhirfus created."""
    path = f"/{RES_TYPE}"
    bare_load, bare_probe = bare
    bare_load.run("warm-up", [HttpCall("POST", path, _encode(d), 201) for d in documents[: counts.warmup]], bare_probe)
    docs = documents[: counts.creates]
    rounds: dict[str, list[Measurement]] = {"fhirfus": [], "bare": []}
    created: list[tuple[str, dict[str, Any]]] = []
    size = -(-len(docs) // ROUNDS)
    for offset in range(0, len(docs), size):
        part = docs[offset : offset + size]
        for name, (load, probe) in (("fhirfus", fhirfus), ("bare", bare)):
            measured, ids = load.run(name, [HttpCall("POST", path, _encode(d), 201) for d in part], probe)
            rounds[name].append(measured)
            if name == "fhirfus":
                created += [(i, d) for i, d in zip(ids, part, strict=True) if i]
    create = _combined("HTTP create (POST)", rounds["fhirfus"])
    ceiling = _combined("bare FastAPI create", rounds["bare"])
    _progress(tag, create)
    _progress(tag, ceiling)
    if not created:
        raise BenchError(f"no resource was created: {create.first_error}")
    return create, ceiling, created


def read_phases(
    fhirfus: tuple[LoadGenerator, Probe], bare: tuple[LoadGenerator, Probe], reads: list[HttpCall], counts: Counts,
    tag: str,
) -> tuple[Measurement, Measurement]:
    """The same reads against fhirfus and the bare endpoint, in alternating rounds after a warm-up of each."""
    for load, probe in (fhirfus, bare):
        load.run("warm-up", reads[: counts.warmup], probe)
    rounds: dict[str, list[Measurement]] = {"fhirfus": [], "bare": []}
    size = -(-len(reads) // ROUNDS)
    for offset in range(0, len(reads), size):
        for name, (load, probe) in (("fhirfus", fhirfus), ("bare", bare)):
            rounds[name].append(load.run(name, reads[offset : offset + size], probe)[0])
    read = _combined("HTTP read (GET by id)", rounds["fhirfus"])
    ceiling = _combined("bare FastAPI read", rounds["bare"])
    _progress(tag, read)
    _progress(tag, ceiling)
    return read, ceiling


def _combined(label: str, parts: list[Measurement]) -> Measurement:
    """One measurement of several rounds: counts, times, latencies and CPU added up."""
    def total(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else sum(v or 0.0 for v in values)

    usages = [p.cpu for p in parts if p.cpu is not None]
    cpu = None
    if len(usages) == len(parts) and usages:
        machine_s = total([u.machine_s for u in usages])
        seconds = sum(p.seconds for p in parts)
        busy = None if machine_s is None or seconds <= 0 else machine_s / (seconds * (os.cpu_count() or 1))
        cpu = CpuUsage(total([u.server_s for u in usages]), sum(u.loadgen_s for u in usages),
                       total([u.database_s for u in usages]), busy, machine_s)
    errors = [p.first_error for p in parts if p.first_error]
    return Measurement(label, sum(p.count for p in parts), sum(p.seconds for p in parts),
                       [x for p in parts for x in p.latencies], sum(p.errors for p in parts),
                       errors[0] if errors else None, cpu)


def http_updates(
    load: LoadGenerator, created: list[tuple[str, dict[str, Any]]], counts: Counts, probe: Probe, tag: str
) -> Measurement:
    """Updates of distinct created ids."""
    rng = random.Random(SEED + 3)
    targets = rng.sample(created, min(counts.updates, len(created)))
    puts = [HttpCall("PUT", f"/{RES_TYPE}/{i}", _encode(updated(d, i)), 200) for i, d in targets]
    measured, _ = load.run("HTTP update (PUT)", puts, probe)
    _progress(tag, measured)
    return measured


def _require_clean(measurement: Measurement, tag: str) -> None:
    if measurement.errors == measurement.count:
        raise BenchError(f"[{tag}] every warm-up request failed, e.g. {measurement.first_error}")


def _progress(tag: str, m: Measurement) -> None:
    p95 = m.percentile_ms(0.95)
    extra = f", p95 {p95:.1f} ms" if p95 is not None else ""
    server_ms = m.cpu_ms_per_op(m.cpu.server_s if m.cpu else None)
    extra += f", server CPU {server_ms:.2f} ms/request ({server_ms:.2f} s per 1,000)" if server_ms is not None else ""
    errors = f", [red]{m.errors} errors[/red]" if m.errors else ""
    console.print(f"  {escape(f'[{tag}]')} {m.label}: {m.count} in {m.seconds:.2f} s = {m.rate:,.0f}/s{extra}{errors}")


# --- one backend -----------------------------------------------------------------------------


@dataclass
class BackendResult:
    backend: str
    http: dict[str, Measurement]
    bare_create: Measurement
    ceiling: Measurement
    raw: dict[str, Measurement]
    seconds: float


def bench_backend(backend: str, options: Options, workdir: Path) -> BackendResult:
    started = time.perf_counter()
    counts = options.counts
    documents = payloads(max(counts.creates, counts.warmup), 0, random.Random(SEED))
    console.rule(f"{backend}: {options.clients} clients ({options.loadgen}), {counts.creates} creates, "
                 f"{counts.reads} reads, {counts.updates} updates")
    with backend_databases(backend, workdir) as (server_url, raw_url):
        migrated(server_url)
        seed_references(server_url)
        migrated(raw_url)
        with fhirfus_server(server_url, workdir, options.workers) as server, \
                load_generator(options.loadgen, server.base, options.clients) as load:
            probe = Probe(server.pid, _pg_name(server_url))
            warm_ids = warm_up(load, documents, counts, probe, backend)
            with bare_server(server_url, warm_ids[0], workdir, options.workers) as bare, \
                    load_generator(options.loadgen, bare.base, options.clients) as bare_load:
                http: dict[str, Measurement] = {}
                http["create"], bare_create, created = create_phases(
                    (load, probe), (bare_load, Probe(bare.pid, _pg_name(server_url))), documents, counts, backend)
                rng = random.Random(SEED + 2)
                reads = [HttpCall("GET", f"/{RES_TYPE}/{rng.choice(created)[0]}", None, 200)
                         for _ in range(counts.reads)]
                http["read"], ceiling = read_phases((load, probe), (bare_load, Probe(bare.pid)), reads, counts, backend)
            http["update"] = http_updates(load, created, counts, probe, backend)
        raw = raw_baseline(raw_url, documents, counts, options.clients, Probe(None, _pg_name(raw_url)))
        for key in ("insert", "insert_batched", "select_key", "select_pk", "update"):
            _progress(backend, raw[key])
    return BackendResult(backend, http, bare_create, ceiling, raw, time.perf_counter() - started)


# --- reporting -------------------------------------------------------------------------------


def _share(part: float, whole: float) -> str:
    return "—" if whole <= 0 else f"{100 * part / whole:.0f}%"


_COLUMNS = ["measurement", "n", "rate /s", "p50 ms", "p95 ms", "ratio", "server CPU", "loadgen CPU", "PG CPU",
            "other CPU", "CPU busy"]


def _row_cells(m: Measurement, ratio: str) -> list[str]:
    cpu = m.cpu
    server = m.cpu_ms_per_op(cpu.server_s if cpu else None)
    loadgen = m.cpu_ms_per_op(cpu.loadgen_s if cpu else None)
    database = m.cpu_ms_per_op(cpu.database_s if cpu else None)
    other = m.cpu_ms_per_op(cpu.other_s if cpu else None)
    busy = None if cpu is None or cpu.machine_busy is None else 100 * cpu.machine_busy
    label = m.label + (f" ({m.errors} errors)" if m.errors else "")
    return [label, f"{m.count:,}", _fmt(m.rate, 0), _fmt(m.percentile_ms(0.50), 2), _fmt(m.percentile_ms(0.95), 2),
            ratio, _fmt(server, 2), _fmt(loadgen, 2), _fmt(database, 2), _fmt(other, 2),
            "—" if busy is None else f"{busy:.0f} %"]


def backend_report(result: BackendResult, options: Options) -> Report:
    http, raw, ceiling, bare_create = result.http, result.raw, result.ceiling, result.bare_create
    report = Report(f"{result.backend}: fhirfus over HTTP vs bare FastAPI vs raw database", list(_COLUMNS))
    report.rows += [
        _row_cells(http["create"], f"{_share(http['create'].rate, bare_create.rate)} of bare / "
                                   f"{_share(http['create'].rate, raw['insert'].rate)} raw"),
        _row_cells(http["read"], f"{_share(http['read'].rate, ceiling.rate)} of bare / "
                                 f"{_share(http['read'].rate, raw['select_key'].rate)} raw"),
        _row_cells(http["update"], f"{_share(http['update'].rate, raw['update'].rate)} of raw"),
        _row_cells(bare_create, "ceiling"),
        _row_cells(ceiling, "ceiling"),
    ]
    report.rows += [_row_cells(raw[key], "baseline") for key in
                    ("insert", "insert_batched", "select_key", "select_pk", "update")]
    report.notes += [
        f"{options.clients} concurrent keep-alive clients ({options.loadgen}); server = `fhirfus serve` in its own "
        "process; raw = SQLAlchemy Core on the same table shape, same thread count, no HTTP, no FHIR logic.",
        "CPU columns are CPU ms per operation (= CPU seconds per 1,000 operations): server = the server process (SQLite runs inside it), "
        "loadgen = this process (for raw rows: client + driver), PG = the PostgreSQL backends of the bench "
        "database, other = the rest of the busy CPU (shared PostgreSQL writers, other work on the machine: "
        "high means noisy figures); "
        f"CPU busy = share of all {os.cpu_count()} cores.",
        "The bare ceiling is bounded by the load generator too (one Python process): read it as "
        "'what this client reaches against an endpoint doing nothing', not as the server's limit.",
    ]
    noise = _other_share([*http.values(), bare_create, ceiling])
    if noise is not None and noise > NOISY_SHARE:
        report.notes.append(f"WARNING: other work took {noise:.0%} of the busy CPU during the HTTP phases; "
                            "these figures are low and noisy, run again on a quiet machine.")
    report.notes += [f"{m.label}: {m.errors} errors, first: {m.first_error}"
                     for m in [*http.values(), bare_create, ceiling, *raw.values()] if m.errors]
    return report


def _other_share(measurements: list[Measurement]) -> float | None:
    """Share of the busy CPU that belonged to none of the bench's processes."""
    usages = [m.cpu for m in measurements if m.cpu and m.cpu.machine_s and m.cpu.other_s is not None]
    busy = sum(u.machine_s or 0.0 for u in usages)
    return None if busy <= 0 else sum(u.other_s or 0.0 for u in usages) / busy


def _per_thousand(m: Measurement, seconds: float | None) -> str:
    """CPU seconds per 1,000 operations."""
    return "—" if seconds is None or not m.count else f"{seconds * 1000 / m.count:.2f}"


def _beside_bare(backend: str, fhirfus: Measurement, bare: Measurement) -> list[list[str]]:
    """Rows of fhirfus and the bare endpoint: rate, p95, share of bare, CPU per 1,000 requests."""
    rows = []
    for name, m in (("fhirfus", fhirfus), ("bare FastAPI", bare)):
        cpu = m.cpu
        server = cpu.server_s if cpu else None
        both = None if server is None else server + ((cpu.database_s or 0.0) if cpu else 0.0)
        rows.append([backend, name, _fmt(m.rate, 0), _fmt(m.percentile_ms(0.95), 2), _share(m.rate, bare.rate),
                     _per_thousand(m, server), _per_thousand(m, both)])
    return rows


def reads_report(results: list[BackendResult], options: Options) -> Report:
    """Reads by id of fhirfus beside the bare endpoint, measured in the same run (issue #21)."""
    report = Report(f"Reads by id: fhirfus beside bare FastAPI (same run, same clients, {options.workers} worker(s) each)",
                    ["backend", "server", "reads/s", "p95 ms", "share of bare", "server CPU s / 1,000 reads",
                     "server + PG CPU s / 1,000 reads"])
    for r in results:
        report.rows += _beside_bare(r.backend, r.http["read"], r.ceiling)
    report.notes.append("The bare endpoint answers one document it read once at start: no database per read, "
                        "so its PG column is empty.")
    return report


def creates_report(results: list[BackendResult], options: Options) -> Report:
    """Creates of fhirfus beside the bare endpoint, same run, alternating rounds, same workers (issue #21)."""
    report = Report(f"Creates: fhirfus beside bare FastAPI (same run, alternating rounds, {options.workers} "
                    f"worker process{'es' if options.workers > 1 else ''} each)",
                    ["backend", "server", "creates/s", "p95 ms", "share of bare", "server CPU s / 1,000 creates",
                     "server + PG CPU s / 1,000 creates"])
    for r in results:
        report.rows += _beside_bare(r.backend, r.http["create"], r.bare_create)
    report.notes.append("The bare create stores the same documents (current and history row, one transaction) "
                        "with no FHIR logic: validation, search index, references, Subscriptions and audit are "
                        "what fhirfus adds.")
    return report


def summary_report(results: list[BackendResult]) -> Report:
    report = Report("Aims (set for PostgreSQL; SQLite shown for reference)",
                    ["backend", "aim", "measured", "met"])
    for r in results:
        create, read = r.http["create"], r.http["read"]
        share = read.rate / r.ceiling.rate if r.ceiling.rate else 0.0
        create_cpu = create.cpu_ms_per_op(create.cpu.server_s if create.cpu else None)
        bare_cpu = r.bare_create.cpu_ms_per_op(r.bare_create.cpu.server_s if r.bare_create.cpu else None)
        p95 = read.percentile_ms(0.95) or float("inf")
        report.rows += [
            [r.backend, f"create ≥ {AIM_CREATE_RATE:.0f}/s", f"{create.rate:,.0f}/s (bare FastAPI "
             f"{r.bare_create.rate:,.0f}/s)", _mark(create.rate >= AIM_CREATE_RATE)],
            [r.backend, "server CPU per create (fhirfus / bare FastAPI)",
             f"{_fmt(create_cpu, 2)} / {_fmt(bare_cpu, 2)} ms", "—"],
            [r.backend, f"read ≥ {AIM_READ_SHARE:.0%} of bare FastAPI",
             f"{share:.0%} ({read.rate:,.0f} of {r.ceiling.rate:,.0f}/s)", _mark(share >= AIM_READ_SHARE)],
            [r.backend, f"p95 read ≤ {AIM_READ_P95_MS:.0f} ms", f"{p95:.2f} ms", _mark(p95 <= AIM_READ_P95_MS)],
        ]
    return report


def write_markdown(
    reports: list[Report], options: Options, seconds: float, skipped: list[str], background: float | None
) -> None:
    counts = options.counts
    header = [
        "## `make bench`", "",
        f"- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {_git_revision()}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores (server, PostgreSQL and load generator "
        "on the same machine)",
        f"- {options.clients} keep-alive clients ({options.loadgen}), {options.workers} worker process(es) per server; per backend: {counts.warmup} warm-up, "
        f"{counts.creates} creates, {counts.reads} reads, {counts.updates} updates of ~"
        f"{len(_encode(observation(0, random.Random(SEED))))} B {RES_TYPE} resources",
        f"- total run time {seconds:.0f} s; CPU busy before the run (other work): "
        f"{'unknown' if background is None else f'{background:.0%}'}",
    ]
    header += [f"- skipped: {reason}" for reason in skipped]
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text("\n".join(header) + "\n\n" + "\n".join(r.markdown() for r in reports))


# --- entry point -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run, noisier figures)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "all"), default="all")
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive clients (default 4)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes of fhirfus and of the bare endpoint alike (default 1)")
    parser.add_argument("--loadgen", choices=("threads", "async"), default="threads",
                        help="threads with httpx.Client (default) or asyncio with httpx.AsyncClient")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"Markdown file (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.workers < 1:
        parser.error("--clients and --workers must be at least 1")
    return args


def background_load(sample_s: float = 1.0) -> float | None:
    """Fraction of all cores busy before the run: other work on the machine skews every figure."""
    before = _machine_ticks()
    time.sleep(sample_s)
    after = _machine_ticks()
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def run(options: Options) -> int:
    started = time.perf_counter()
    idle_check = background_load()
    if idle_check is not None and idle_check > 0.15:
        console.print(f"[yellow]warning: the machine was {idle_check:.0%} busy before the run; "
                      "figures will be low and noisy[/yellow]")
    backends_done: list[BackendResult] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fhirfus-bench-") as tmp:
        for backend in options.backends:
            workdir = Path(tmp) / backend
            workdir.mkdir()
            try:
                backends_done.append(bench_backend(backend, options, workdir))
            except BenchError as exc:
                console.print(f"[yellow]warning: {backend} skipped: {escape(str(exc))}[/yellow]")
                skipped.append(f"{backend}: {str(exc).splitlines()[0]}")
    seconds = time.perf_counter() - started
    reports = [backend_report(r, options) for r in backends_done]
    if backends_done:
        reports += [creates_report(backends_done, options), reads_report(backends_done, options), summary_report(backends_done)]
    console.print()
    for report in reports:
        console.print(report.rich())
        for note in report.notes:
            console.print(f"  [dim]{escape(note)}[/dim]")
        console.print()
    write_markdown(reports, options, seconds, skipped, idle_check)
    console.print(f"total {seconds:.0f} s; Markdown written to {options.output}")
    return 0 if backends_done else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _terminate_on_sigterm()
    options = Options(
        counts=QUICK if args.quick else FULL,
        clients=args.clients,
        loadgen=args.loadgen,
        backends=("sqlite", "postgresql") if args.backend == "all" else (args.backend,),
        output=args.output,
        workers=args.workers,
    )
    try:
        return run(options)
    except KeyboardInterrupt:
        console.print("[red]interrupted; servers stopped and databases dropped[/red]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
