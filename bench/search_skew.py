"""`make bench`: searches whose criteria are skewed, the lead counted beside the lead by kind (issue 21).

A script, not a test: it prints figures, it asserts nothing. One Patient has ``--popular``
Observations (default 100,000), one of them of a code found nowhere else; 1,000 Patients have five
each, one of them dated 1999. Every Observation but that one is of one common code. Five searches
put a popular criterion beside a rare one, both ways round, and each runs in-process (the SQL the
server sends, no HTTP) in alternating rounds:

- **counted**: as fhirfus searches, the lead picked by counting each criterion's index rows up to
  a cap (``search/lead.py``);
- **by kind**: the lead picked by the kind of parameter alone (``compiler.lead_rank``: a reference
  before a code before a date), as fhirfus picked it before (the probes are today's on both sides).

On PostgreSQL never analysed (autovacuum off on the search tables, as right after a load), then the
same database after ``ANALYZE``, and on SQLite (which has no statistics unless asked).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import harness as bench  # bench/harness.py: bench/ leads sys.path when a benchmark runs as a script

from fhirfus.auth.access import SERVER
from fhirfus.db.engine import make_engine
from fhirfus.interactions.search import match_condition, run_search
from fhirfus.search.compiler import Compiler
from fhirfus.search.lead import index_counter
from fhirfus.search.query import parse_query
from fhirfus.store import repository
from fhirfus.store.repository import NewResource, Store
from fhirfus.store.statistics import STATISTICS_TABLES

SMALL_PATIENTS, SMALL_EACH = 1000, 5
LOINC = "http://loinc.org"
SEARCHES = {
    "popular Patient, rare code": [("subject", "Patient/big"), ("code", f"{LOINC}|rare")],
    "rare Patient, popular code": [("subject", "Patient/s7"), ("code", f"{LOINC}|common")],
    "popular code, rare date": [("code", f"{LOINC}|common"), ("date", "1999-01-01")],
    "rare code, popular date": [("code", f"{LOINC}|rare"), ("date", "ge2000")],
    "popular Patient and code, rare date": [("subject", "Patient/big"), ("code", f"{LOINC}|common"), ("date", "1999")],
}


def _observation(res_id: str, patient: str, code: str, date: str) -> NewResource:
    return NewResource("Observation", res_id, {
        "resourceType": "Observation", "status": "final", "effectiveDateTime": date,
        "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": f"Patient/{patient}"}})


def _items(popular: int) -> Iterator[NewResource]:
    yield NewResource("Patient", "big", {"resourceType": "Patient"})
    for k in range(popular):
        yield _observation(f"b{k}", "big", "rare" if k == popular // 2 else "common", "2020-01-01")
    for p in range(SMALL_PATIENTS):
        yield NewResource("Patient", f"s{p}", {"resourceType": "Patient"})
        for k in range(SMALL_EACH):
            yield _observation(f"s{p}-{k}", f"s{p}", "common", "1999-01-01" if (p, k) == (7, 3) else "2021-06-01")


def _load(url: str, popular: int) -> None:
    bench.migrated(url)
    engine = make_engine(url)
    try:
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                for table in STATISTICS_TABLES:
                    conn.exec_driver_sql(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')
        chunk: list[NewResource] = []
        for item in _items(popular):
            chunk.append(item)
            if len(chunk) == 2000:
                with Store(engine).writing() as conn:
                    repository.create_many(conn, chunk)
                chunk = []
        with Store(engine).writing() as conn:
            repository.create_many(conn, chunk)
    finally:
        engine.dispose()


def _search(store: Store, params: list[tuple[str, str]], counted: bool) -> int | None:
    """One search as ``search_bundle`` runs it (one page of 50 and the total), without the Bundle."""
    query = parse_query("Observation", params)
    with store.reading() as conn:
        compiler = Compiler("http://bench.local/fhir", SERVER.visibility)
        rows = SERVER.visibility.resources()
        count = index_counter(conn, compiler.index_lookup) if counted else None
        match = match_condition(rows, {"Observation": query}, compiler, count)
        return run_search(conn, rows, query, match, 50, ["Observation"])[1]


def _measure(url: str, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Milliseconds per search, by search and by way of leading, in alternating rounds."""
    engine = make_engine(url)
    store = Store(engine)
    times: dict[str, dict[str, list[float]]] = {}
    try:
        for name, params in SEARCHES.items():
            totals = {way: _search(store, params, way == "counted") for way in ("counted", "by kind")}  # warm
            if len(set(totals.values())) != 1:
                raise bench.BenchError(f"{name}: the two ways found different totals {totals}")
            times[name] = {"counted": [], "by kind": []}
            for r in range(rounds):
                for way in ("counted", "by kind") if r % 2 else ("by kind", "counted"):
                    started = time.perf_counter()
                    _search(store, params, way == "counted")
                    times[name][way].append((time.perf_counter() - started) * 1000)
    finally:
        engine.dispose()
    return times


def _row(setup: str, name: str, measured: dict[str, list[float]]) -> list[str]:
    cells = [setup, name]
    for way in ("counted", "by kind"):
        ms = sorted(measured[way])
        cells.append(f"{statistics.median(ms):,.1f} ({ms[0]:,.1f}–{ms[-1]:,.1f})")
    cells.append(f"{statistics.median(measured['by kind']) / statistics.median(measured['counted']):,.1f}×")
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 Observations of the popular Patient")
    parser.add_argument("--popular", type=int, help="Observations of the popular Patient (default 100,000)")
    parser.add_argument("--rounds", type=int, default=6, help="searches per way and search (default 6)")
    args = parser.parse_args(argv)
    popular = args.popular or (10_000 if args.quick else 100_000)
    bench._terminate_on_sigterm()
    report = bench.Report(
        f"Skewed searches: the lead counted beside the lead by kind ({popular:,} Observations of one Patient, "
        f"{SMALL_PATIENTS:,} × {SMALL_EACH} of others)",
        ["database", "search", "counted: ms median (range)", "by kind: ms median (range)", "by kind / counted"])
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        with bench.postgres_databases(1) as (url,), tempfile.TemporaryDirectory(prefix="fhirfus-bench-") as tmp:
            sqlite_url = f"sqlite:///{Path(tmp) / 'skew.db'}"
            for setup, target in (("PostgreSQL, never analysed", url), ("SQLite", sqlite_url)):
                bench.console.print(f"loading into {setup} …")
                _load(target, popular)
                for name, measured in _measure(target, args.rounds).items():
                    report.rows.append(_row(setup, name, measured))
                if target == url:
                    with make_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                        conn.exec_driver_sql("ANALYZE")
                    for name, measured in _measure(url, args.rounds).items():
                        report.rows.append(_row("PostgreSQL, after ANALYZE", name, measured))
    except bench.BenchError as exc:
        bench.console.print(f"[red]search_skew failed: {exc}[/red]")
        return 1
    report.notes.append(f"in-process (no HTTP), one page of 50 and the total, {args.rounds} searches per way in "
                        f"alternating rounds; load average {load} at the start on 2 shared cores; "
                        f"revision {bench._git_revision()}")
    bench.console.print(report.rich())
    bench.RESULTS.parent.mkdir(exist_ok=True)
    with bench.RESULTS.open("a") as handle:
        handle.write(report.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
