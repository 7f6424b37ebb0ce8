"""Analysis export figures on PostgreSQL: end-to-end time, peak memory, view rows/s (not a test).

``python -m bench.analysis_export [--patients N] [--database URL] [--keep]``

1. Unless ``--database`` points at a loaded database, creates a throw-away PostgreSQL database on
   ``FHIRFUS_TEST_POSTGRES_URL`` and loads N synthetic patients (``analysis_synth``), 1,000 per
   site: the site rows go through the site-registry mapping (so the resources are exactly those
   ``fhirfus import`` writes, TWSTRS score Observations included), but are written with bulk
   inserts (``repository.create_many``) instead of one conditional transaction per patient,
   which would take most of an hour for 10,000 patients;
2. runs ``export_analysis`` (CSV and Parquet) in a fresh child process each and reports wall
   time, the per-stage split, and the child's peak resident memory (``ru_maxrss``);
3. measures the reference ViewDefinition runner (fhirpathpy) on a sample of the same resources
   beside the compiled fast path the export uses.

It prints Markdown and asserts nothing; ``make bench`` can call it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sqlalchemy import func, select

from fhirfus.settings import test_postgres_url
from fhirfus.testing import scratch_postgres

POSTGRES_URL = test_postgres_url()
PER_SITE = 1000
BENCH_KEY = "analysis-bench-key-not-a-secret"


def _resolve(value: object, mapping: dict[str, str]) -> object:
    """Turn the bundle-internal ``urn:uuid:`` references into ``Type/id``."""
    if isinstance(value, dict):
        return {k: (mapping.get(v, v) if k == "reference" and isinstance(v, str) else _resolve(v, mapping))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, mapping) for v in value]
    return value


def _load_site(url: str, site: str, patients: int, seed: int) -> int:
    """Map one synthetic site through site-registry and bulk-insert what an import would write."""
    from fhirfus.db.engine import make_engine
    from fhirfus.domain.conformance import load_conformance
    from fhirfus.domain.derived import to_create_with
    from fhirfus.domain.synthetic_cohort import cohort_rows
    from fhirfus.ingest.mapping.engine import map_rows
    from fhirfus.ingest.mapping.spec import load_spec
    from fhirfus.store.repository import NewResource, Store, create_many

    load_conformance()
    result = map_rows(load_spec("site-registry"), list(cohort_rows(patients, seed=seed, prefix=f"{site}-")), site)
    items: list[NewResource] = []
    seen: set[str] = set()
    for bundle in result.bundles.values():
        mapping = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource'].get('id') or uuid.uuid4()}"
                   for e in bundle["entry"]}
        for entry in bundle["entry"]:
            kind, res_id = mapping[entry["fullUrl"]].split("/")
            if mapping[entry["fullUrl"]] in seen:
                continue  # the site Organization, shared by every patient of the site
            seen.add(mapping[entry["fullUrl"]])
            body = _resolve({k: v for k, v in entry["resource"].items() if k != "id"}, mapping)
            item = NewResource(kind, res_id, body, "PUT")
            items += [item, *to_create_with([item])]
    engine = make_engine(url)
    store = Store(engine)
    for start in range(0, len(items), 2000):
        with store.writing() as conn:
            create_many(conn, items[start:start + 2000])
    engine.dispose()
    return len(result.bundles)


def load(url: str, patients: int) -> float:
    sites = [(f"B{i:02d}", min(PER_SITE, patients - start), 1000 + i) for i, start in enumerate(range(0, patients, PER_SITE))]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        loaded = sum(pool.map(_load_site, [url] * len(sites), *zip(*sites, strict=True)))
    seconds = time.perf_counter() - started
    print(f"loaded {loaded} patients in {seconds:.0f} s", file=sys.stderr)
    return seconds


def migrated(url: str) -> str:
    from fhirfus.db import migrate
    from fhirfus.db.engine import make_engine

    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def count_resources(url: str) -> dict[str, int]:
    from fhirfus.db.engine import make_engine
    from fhirfus.db.visibility import EVERYTHING
    resources = EVERYTHING.resources()

    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(resources.c.res_type, func.count()).where(resources.c.deleted.is_(False))
                            .group_by(resources.c.res_type)).all()
    engine.dispose()
    return dict(rows)


def export_child(url: str, out: str, fmt: str) -> None:
    """Child-process body: one export, its figures as JSON on stdout."""
    from fhirfus.analysis.export import run_analysis
    from fhirfus.db.engine import make_engine
    from fhirfus.store.repository import Store

    started = time.perf_counter()
    engine = make_engine(url)
    result = run_analysis(Store(engine), None, Path(out), fmt, key=BENCH_KEY)
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"wall": wall, "stages": result.seconds, "figures": result.figures, "peak_mib": peak_kib / 1024,
                      "bytes": sum(p.stat().st_size for p in Path(out).iterdir())}))


def run_export(url: str, fmt: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        child = subprocess.run([sys.executable, "-m", "bench.analysis_export", "--child", url, out, fmt],
                               capture_output=True, text=True, check=True)
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        figures["process_wall"] = time.perf_counter() - started  # includes interpreter start and imports
        return figures


def reference_runner(url: str, sample: int = 20000) -> dict[str, float]:
    """Rows/s of the fhirpathpy reference runner vs the compiled path, on the same resources."""
    from fhirfus.analysis.views import analysis_views
    from fhirfus.db.engine import make_engine
    from fhirfus.db.visibility import EVERYTHING
    from fhirfus.sqlonfhir.runner import compile_view
    resources = EVERYTHING.resources()

    views = analysis_views()
    types = sorted({v.resource for v in views})
    engine = make_engine(url)
    with engine.connect() as conn:
        docs = [r.content for r in conn.execute(select(resources.c.content).where(resources.c.res_type.in_(types))
                                                .order_by(resources.c.pk).limit(sample))]
    engine.dispose()
    figures = {}
    for label, compiled in (("reference", {v.name: compile_view(json.loads(_view_text(v.file))) for v in views}),
                            ("compiled", {v.name: v.compiled for v in views})):
        by_type: dict[str, list] = {}
        for view in views:
            by_type.setdefault(view.resource, []).append(compiled[view.name])
        started, rows = time.perf_counter(), 0
        for doc in docs:
            for view in by_type[doc["resourceType"]]:
                rows += len(view.rows(doc))
        seconds = time.perf_counter() - started
        figures[label] = rows / seconds
        figures[f"{label}_resources_per_s"] = len(docs) / seconds
    return figures


def _view_text(file: str) -> str:
    from fhirfus.analysis.views import VIEW_DIR

    return (VIEW_DIR / file).read_text(encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--database", help="use this loaded database instead of creating one")
    parser.add_argument("--keep", action="store_true", help="keep the created database (prints its URL)")
    parser.add_argument("--child", nargs=3, metavar=("URL", "OUT", "FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        export_child(*args.child)
        return
    if args.database:
        report(args.database, loaded=False)
        return
    keep = f"fhirfus_analysis_bench_{uuid.uuid4().hex[:8]}" if args.keep else None
    with scratch_postgres(prefix="fhirfus_analysis_bench", keep=keep) as (url,):
        report(migrated(url), loaded=True, patients=args.patients)
        if keep:
            print(f"\ndatabase kept: {url}", file=sys.stderr)


def report(url: str, *, loaded: bool, patients: int = 0) -> None:
    """Load (unless the database is already loaded), then export twice and time the runner."""
    load_seconds = load(url, patients) if loaded else None
    counts = count_resources(url)
    total = sum(counts.values())
    print("## Analysis export (PostgreSQL)\n")
    print(f"- cohort: {counts.get('Patient', 0)} patients, {total} resources "
          f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    if load_seconds is not None:
        print(f"- load (site-registry mapping, bulk inserts): {load_seconds:.0f} s")
    for fmt in ("csv", "parquet"):
        figures = run_export(url, fmt)
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in figures["stages"].items())
        print(f"- export ({fmt}): {figures['wall']:.1f} s end to end in the exporting process "
              f"({figures['process_wall']:.1f} s with interpreter start), peak RSS {figures['peak_mib']:.0f} MiB, "
              f"{figures['bytes'] / 1e6:.1f} MB written; {stages}")
        print(f"  - view rows: {figures['figures']['view_rows']} at {figures['figures']['view_rows_per_second']:,} rows/s "
              f"({figures['figures']['view_resources_per_second']:,} resources/s, "
              f"{figures['figures']['view_fallbacks']} fallbacks); reading {figures['figures']['read_seconds']:.1f} s")
    runner = reference_runner(url)
    print(f"- ViewDefinition runner on 20,000 of these resources: reference (fhirpathpy) "
          f"{runner['reference']:,.0f} rows/s ({runner['reference_resources_per_s']:,.0f} resources/s), "
          f"compiled fast path {runner['compiled']:,.0f} rows/s ({runner['compiled_resources_per_s']:,.0f} resources/s)")


if __name__ == "__main__":
    main()
