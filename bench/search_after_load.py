"""`make bench`: search right after data arrives through the API (issue 21).

A script, not a test: it prints figures, it asserts nothing. Three fresh PostgreSQL databases get
the same 5,500 resources through transaction Bundles over HTTP (500 patients, ten Observations
each, nine of them sharing one code), and three seconds later the same
``Observation?subject=Patient/X&code=C`` searches:

- **fhirfus** as it runs by default: it refreshes the planner's statistics itself once its writes
  outgrow them (``store/statistics.py``);
- **without the refresh** (``FHIRFUS_ANALYZE_AFTER=0``): what search was before, left to
  autovacuum, which looks once a minute at best;
- **after ``VACUUM ANALYZE``**, the baseline: the best statistics there can be.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import harness as bench  # bench/harness.py: bench/ leads sys.path when a benchmark runs as a script
import httpx
import orjson
from sqlalchemy import create_engine

PATIENTS, PER_PATIENT = 500, 10
COMMON, RARE = "8867-4", "9279-1"  # heart rate: nine of ten; respiratory rate: one of ten
SETTLE_S = 3.0


def _bundles() -> list[bytes]:
    bundles, entries = [], []
    for p in range(PATIENTS):
        entries.append({"resource": {"resourceType": "Patient", "id": f"p{p}"},
                        "request": {"method": "PUT", "url": f"Patient/p{p}"}})
        for n in range(PER_PATIENT):
            entries.append({"resource": {
                "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/p{p}"},
                "code": {"coding": [{"system": "http://loinc.org", "code": RARE if n == 0 else COMMON}]},
                "valueQuantity": {"value": 60 + n, "unit": "/min"}},
                "request": {"method": "POST", "url": "Observation"}})
        if len(entries) >= 100:
            bundles.append(orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
            entries = []
    return bundles


def _load(base: str, bundles: list[bytes]) -> None:
    with httpx.Client(base_url=base, headers=bench.HEADERS, timeout=120) as client:
        for body in bundles:
            answer = client.post("", content=body)
            if answer.status_code != 200:
                raise bench.BenchError(f"transaction → {answer.status_code}: {answer.text[:300]}")


def _searches(count: int) -> list[bench.HttpCall]:
    rng = random.Random(21)
    return [bench.HttpCall("GET", f"/Observation?subject=Patient/p{rng.randrange(PATIENTS)}"
                           f"&code=http://loinc.org|{COMMON}", None, 200) for _ in range(count)]


def _measure(label: str, url: str, workdir: Path, searches: list[bench.HttpCall], *, refresh: bool,
             vacuum: bool, bundles: list[bytes]) -> bench.Measurement:
    bench.migrated(url)
    previous = os.environ.get("FHIRFUS_ANALYZE_AFTER")
    os.environ["FHIRFUS_ANALYZE_AFTER"] = "1000" if refresh else "0"
    try:
        with bench.fhirfus_server(url, workdir) as server:
            _load(server.base, bundles)
            if vacuum:
                engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1),
                                       isolation_level="AUTOCOMMIT")
                with engine.connect() as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE")
                engine.dispose()
            time.sleep(SETTLE_S)
            with bench.load_generator("threads", server.base, 4) as load:
                measured, _ = load.run(label, searches, bench.Probe(server.pid, bench._pg_name(url)))
    finally:
        if previous is None:
            os.environ.pop("FHIRFUS_ANALYZE_AFTER", None)
        else:
            os.environ["FHIRFUS_ANALYZE_AFTER"] = previous
    return measured


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer searches")
    args = parser.parse_args(argv)
    bench._terminate_on_sigterm()
    searches = _searches(300 if args.quick else 2000)
    bundles = _bundles()
    report = bench.Report(
        f"Search right after a load through the API ({PATIENTS * (PER_PATIENT + 1):,} resources in transactions, "
        f"searched {SETTLE_S:.0f} s later)",
        ["statistics", "searches/s", "p50 ms", "p95 ms", "errors"])
    setups = [("fhirfus (refreshed by the server)", True, False), ("without the refresh (autovacuum only)", False, False),
              ("after VACUUM ANALYZE (baseline)", False, True)]
    with bench.postgres_databases(len(setups)) as urls, tempfile.TemporaryDirectory(prefix="fhirfus-bench-") as tmp:
        for (label, refresh, vacuum), url in zip(setups, urls, strict=True):
            measured = _measure(label, url, Path(tmp), searches, refresh=refresh, vacuum=vacuum, bundles=bundles)
            report.rows.append([label, bench._fmt(measured.rate), bench._fmt(measured.percentile_ms(0.5), 2),
                                bench._fmt(measured.percentile_ms(0.95), 2), str(measured.errors)])
    report.notes.append(f"`Observation?subject=Patient/X&code=loinc|{COMMON}`, 4 clients, one worker; "
                        f"revision {bench._git_revision()}")
    bench.console.print(report.rich())
    bench.RESULTS.parent.mkdir(exist_ok=True)
    with bench.RESULTS.open("a") as handle:
        handle.write(report.markdown())


if __name__ == "__main__":
    sys.exit(main())
