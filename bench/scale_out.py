"""`make bench`: fhirfus on one host and on two, behind HAProxy, on one PostgreSQL (issue 21).

A script, not a test: it prints figures, it asserts nothing. Each host is a network namespace on
this machine running ``fhirfus serve`` with one worker (``fhirfus/testing_hosts.py``); the same
reads by id and creates go through the balancer to one host, then to two. Beside them, as the
baseline of the same run, one host without the balancer in front (what the balancer costs).

Every host shares this machine's cores with PostgreSQL and the load generator, so the table says
where the gain stops: the server processes' and PostgreSQL's CPU per phase are printed with it.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

import orjson
from harness import (  # bench/harness.py: bench/ leads sys.path when a benchmark runs as a script
    RESULTS,
    HttpCall,
    Measurement,
    Probe,
    Report,
    _fmt,
    _git_revision,
    _terminate_on_sigterm,
    console,
    load_generator,
    observation,
    seed_references,
)

from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.store import repository
from fhirfus.store.repository import NewResource, Store
from fhirfus.testing import scratch_postgres
from fhirfus.testing_hosts import hosts_behind_balancer, socket_url, unavailable

SEEDED = 2000


def _seed(url: str) -> list[str]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    seed_references(url)
    rng = random.Random(21)
    ids = [f"seed-{i:05d}" for i in range(SEEDED)]
    with Store(engine).writing() as conn:
        repository.create_many(conn, [NewResource("Observation", res_id, observation(i, rng))
                                      for i, res_id in enumerate(ids)])
    Store(engine).analyze()
    engine.dispose()
    return ids


def _phases(base: str, ids: list[str], reads: int, creates: int, clients: int, probe: Probe,
            label: str) -> tuple[Measurement, Measurement]:
    rng = random.Random(7)
    read_calls = [HttpCall("GET", f"/fhir/Observation/{rng.choice(ids)}", None, 200) for _ in range(reads)]
    create_calls = [HttpCall("POST", "/fhir/Observation", orjson.dumps(observation(10_000 + i, rng)), 201)
                    for i in range(creates)]
    with load_generator("threads", base, clients) as load:
        load.run("warm-up", read_calls[: reads // 10], probe)
        read, _ = load.run(f"{label} reads", read_calls, probe)
        create, _ = load.run(f"{label} creates", create_calls, probe)
    return read, create


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive clients")
    args = parser.parse_args(argv)
    _terminate_on_sigterm()
    reason = unavailable()
    if reason:
        console.print(f"[yellow]scale-out bench skipped: {reason}[/yellow]")
        return
    reads, creates = (600, 200) if args.quick else (6000, 1500)
    report = Report("Scale-out: hosts behind HAProxy on one PostgreSQL (one worker per host)",
                    ["setup", "reads/s", "read p95 ms", "creates/s", "create p95 ms", "PostgreSQL CPU s"])
    with scratch_postgres() as (url,), tempfile.TemporaryDirectory() as workdir:
        ids = _seed(url)
        database = url.rsplit("/", 1)[-1]
        env = {**os.environ, "FHIRFUS_DATABASE_URL": socket_url(url), "FHIRFUS_AUTH": "off",
               "FHIRFUS_EXPORT_DIR": str(Path(workdir) / "exports")}
        setups = [("1 host, no balancer (baseline)", 1, True), ("1 host", 1, False), ("2 hosts", 2, False)]
        for label, count, direct in setups:
            folder = Path(workdir) / label.replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")
            folder.mkdir()
            with hosts_behind_balancer(count, env, folder) as cluster:
                base = cluster.hosts[0].url if direct else cluster.balancer
                probe = Probe(server_pid=None, database=database)
                read, create = _phases(base, ids, reads, creates, args.clients, probe, label)
            problems = read.errors + create.errors
            for failed in (m for m in (read, create) if m.first_error):
                report.notes.append(f"{label}, {failed.label}: {failed.errors} errors, first: {failed.first_error}")
            report.rows.append([label + (f" ({problems} errors)" if problems else ""), _fmt(read.rate),
                                _fmt(read.percentile_ms(0.95)), _fmt(create.rate), _fmt(create.percentile_ms(0.95)),
                                _fmt(read.cpu.database_s if read.cpu else None, 2)])
    report.notes.append(f"{reads} reads of {SEEDED} seeded Observations and {creates} creates per setup, "
                        f"{args.clients} clients; revision {_git_revision()}; {os.cpu_count()} cores shared by "
                        "hosts, balancer, PostgreSQL and the load generator")
    console.print(report.rich())
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as handle:
        handle.write(report.markdown())


if __name__ == "__main__":
    sys.exit(main())
