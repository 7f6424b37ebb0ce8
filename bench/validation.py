"""`make bench`: what validating a resource costs, per resource type, in-process (no HTTP, no database).

A script, not a test: it prints figures, it asserts nothing. For every resource of a corpus (the
entries of the ingest benchmark's transaction Bundles, the Synthea patients of ``../shared/data``
when present, and the official R4 examples) it times, per resource type,

- the base validation a write ran before invariants (structure, datatypes, required bindings:
  ``fhir.validation.resource_issues``): the baseline;
- the R4 core invariants (``fhirpath.invariants.invariant_errors``);

each resource measured once: both have caches of outcomes (QuestionnaireResponse items, the
children a constraint reads), and a server sees each resource once. Expressions are compiled
once per process: the warm-up (other Bundles and patients, and the examples, which are measured
too) does that first, as a running server has. Then, on a throw-away PostgreSQL database, it
processes the ingest benchmark's transaction Bundles in this process (``bundles.process``),
alternately with and without the invariants, and compares the CPU time per Bundle: what the
invariants cost the transaction path, measured where the shared machine's noise cancels out.
Results are printed and appended to ``bench-results/bench.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness as bench  # bench/harness.py: bench/ leads sys.path when a benchmark runs as a script
import ingest  # the ingest benchmark's realistic transaction Bundles
from rich.markup import escape

from fhirfus.auth.access import SERVER
from fhirfus.db.engine import make_engine
from fhirfus.domain.conformance import load_conformance
from fhirfus.fhir.validation import resource_issues
from fhirfus.fhirpath.invariants import invariant_errors
from fhirfus.interactions import bundles
from fhirfus.store.repository import Store

console = bench.console
SHARED = bench.REPO.parent / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")
SEED = 20260601
#: Types with fewer resources than this in the corpus are summed up as "other types".
MIN_PER_TYPE = 20


def _entries(bundle: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for entry in bundle.get("entry", ()):
        if isinstance(entry.get("resource"), dict):
            yield entry["resource"]


def corpus(bundles: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(warm-up resources, measured resources): ingest-bench Bundles and Synthea, then examples."""
    rng = random.Random(SEED)
    warm = [r for b in ingest.make_bundles(2, ingest.BUNDLE_ENTRIES, rng, 0) for r in _entries(b.document)]
    measured = [r for b in ingest.make_bundles(bundles, ingest.BUNDLE_ENTRIES, rng, 1_000_000)
                for r in _entries(b.document)]
    synthea = sorted((SHARED / "synthea-r4-transaction-bundles").glob("*_*.json"))
    for index, path in enumerate(synthea):
        resources = list(_entries(json.loads(path.read_bytes())))
        (warm if index % 4 == 0 else measured).extend(resources)
    examples = sorted((SHARED / "fhir-r4-examples").glob("*/*.json"))
    valid = [r for r in (json.loads(p.read_bytes()) for p in examples) if isinstance(r, dict) and not resource_issues(r)]
    return warm + valid, measured + valid


def _us(check: Callable[[Any], Any], resource: dict[str, Any]) -> float:
    started = time.perf_counter_ns()
    check(resource)
    return (time.perf_counter_ns() - started) / 1000


def measure(warm: list[dict[str, Any]], measured: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """resource type → (baseline µs, invariants µs) per resource."""
    for resource in warm:
        resource_issues(resource)
        invariant_errors(resource)
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for resource in measured:
        out[resource["resourceType"]].append((_us(resource_issues, resource), _us(invariant_errors, resource)))
    return out


def report(costs: dict[str, list[tuple[float, float]]]) -> bench.Report:
    table = bench.Report(
        "Validation cost per resource (µs, mean over resources, each validated once)",
        ["type", "resources", "base validation (before)", "invariants", "total now", "added"],
    )
    rows = sorted(costs.items(), key=lambda item: -len(item[1]))
    other: list[tuple[float, float]] = []
    everything: list[tuple[float, float]] = []
    for name, pairs in rows:
        everything += pairs
        if len(pairs) < MIN_PER_TYPE:
            other += pairs
            continue
        table.rows.append(_row(name, pairs))
    if other:
        table.rows.append(_row(f"other types ({sum(1 for p in costs.values() if len(p) < MIN_PER_TYPE)})", other))
    table.rows.append(_row("all", everything))
    table.notes.append("base validation: structure, datatypes and required bindings (fhir.validation.resource_issues); "
                       "invariants: the R4 core constraints (fhirpath.invariants.invariant_errors)")
    table.notes.append("corpus: the ingest benchmark's Bundles, Synthea patients (3 of 4), the official R4 examples; "
                       "caches warmed on other Bundles and the remaining Synthea patients")
    return table


def _row(name: str, pairs: list[tuple[float, float]]) -> list[str]:
    base = statistics.fmean(p[0] for p in pairs)
    invariants = statistics.fmean(p[1] for p in pairs)
    return [name, f"{len(pairs):,}", f"{base:,.0f}", f"{invariants:,.0f}", f"{base + invariants:,.0f}",
            f"+{invariants / base:.0%}" if base else "—"]


def transaction_cpu(count: int) -> bench.Report:
    """CPU milliseconds per 100-entry transaction Bundle, with and without the invariants, the two
    alternating Bundle by Bundle (the check is swapped out of ``bundles`` for the other half)."""
    load_conformance()
    rng = random.Random(SEED + 1)
    documents = [b.document for b in ingest.make_bundles(count + 1, ingest.BUNDLE_ENTRIES, rng, 7_000_000)]
    cpu: dict[bool, list[float]] = {True: [], False: []}
    with bench.postgres_databases(1) as (url,):
        bench.migrated(url)
        engine = make_engine(url)
        context = bundles.Context(Store(engine), SERVER, "http://bench.local/fhir")
        try:
            bundles.process(context, documents[0])  # first-use caches
            for index, document in enumerate(documents[1:]):
                checked = index % 2 == 0
                bundles.invariant_errors = invariant_errors if checked else (lambda resource: [])
                started = time.process_time()
                bundles.process(context, document)
                cpu[checked].append((time.process_time() - started) * 1000)
        finally:
            bundles.invariant_errors = invariant_errors
            engine.dispose()
    table = bench.Report("Transaction Bundles in process: CPU per Bundle of 100 entries (ms, median)",
                         ["invariants", "Bundles", "CPU ms", "per resource µs"])
    for checked in (False, True):
        median = statistics.median(cpu[checked])
        table.rows.append(["on" if checked else "off", str(len(cpu[checked])), f"{median:.1f}",
                           f"{median * 1000 / ingest.BUNDLE_ENTRIES:.0f}"])
    added = statistics.median(cpu[True]) / statistics.median(cpu[False]) - 1
    table.notes.append(f"the invariants add {added:+.0%} CPU to the server's side of a transaction (this process; "
                       "PostgreSQL's own CPU not included)")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bundles", type=int, default=10, help="ingest-benchmark Bundles of 100 entries (default 10)")
    parser.add_argument("--transactions", type=int, default=60, help="transaction Bundles timed, half with invariants (default 60)")
    parser.add_argument("--output", type=Path, default=bench.RESULTS, help="Markdown file to append to")
    args = parser.parse_args(argv)
    bench._terminate_on_sigterm()
    started = time.perf_counter()
    warm, measured = corpus(args.bundles)
    console.rule(f"bench_validation: {len(measured):,} resources; load average {os.getloadavg()[0]:.2f}")
    tables = [report(measure(warm, measured))]
    try:
        tables.append(transaction_cpu(args.transactions))
    except bench.BenchError as exc:
        console.print(f"[red]transaction CPU not measured: {escape(str(exc))}[/red]")
    for table in tables:
        console.print(table.rich())
        for note in table.notes:
            console.print(f"  [dim]{escape(note)}[/dim]")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("a", encoding="utf-8") as handle:
        handle.write(f"\n## `make bench`: validation cost per resource type (bench/validation.py)\n\n"
                     f"- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {bench._git_revision()}, "
                     f"load average {os.getloadavg()[0]:.2f}, run time {time.perf_counter() - started:.0f} s\n\n"
                     + "\n".join(table.markdown() for table in tables))
    console.print(f"appended to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
