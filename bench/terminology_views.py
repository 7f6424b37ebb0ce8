"""``$expand`` and ``$viewdefinition-run`` figures on 100,000 resources (not a test).

``python bench/terminology_views.py [--resources N] [--quick]``, on SQLite and PostgreSQL:
- ``$viewdefinition-run``: N Observations loaded through ``repository.create_many`` (the index
  filled as in production), a three-column view run over HTTP as NDJSON and CSV → rows/s; the
  baseline, in the same run and on the same server: the same Observations read as search pages of
  1,000 (``_count=1000``, following ``next``) → resources/s;
- ``$viewdefinition-export``: the same view as an asynchronous NDJSON export, from kick-off to the
  downloaded file (polling every 0.2 s) → rows/s; the baseline: the synchronous run (NDJSON);
- ``$expand``: a stored CodeSystem of N concepts and a ValueSet of all of it, expanded over HTTP
  in pages of 10,000 (``count``/``offset``) → concepts/s; the baseline: reading the CodeSystem
  resource itself (the same concepts as one JSON document) → concepts/s.
It times, it never asserts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
from harness import Report, _terminate_on_sigterm, backend_databases, fhirfus_server, migrated
from rich.console import Console

from fhirfus.db.engine import make_engine
from fhirfus.store.repository import NewResource, Store, create_many

CHUNK = 2000
PAGE = 10_000
VIEW = {"resourceType": "ViewDefinition", "resource": "Observation", "status": "active",
        "select": [{"column": [{"name": "id", "path": "getResourceKey()"},
                               {"name": "subject", "path": "subject.getReferenceKey(Patient)"},
                               {"name": "value", "path": "value.ofType(Quantity).value"}]}]}


def load(url: str, count: int) -> None:
    migrated(url)
    engine = make_engine(url)
    store = Store(engine)
    for start in range(0, count, CHUNK):
        items = [NewResource("Observation", f"tv-{i:08d}", {
            "resourceType": "Observation", "status": "final", "code": {"text": "TWSTRS total"},
            "subject": {"reference": f"Patient/tvp-{i // 10}"},
            "valueQuantity": {"value": i % 86, "unit": "score"}}) for i in range(start, min(count, start + CHUNK))]
        with store.writing() as conn:
            create_many(conn, items)
    concepts = [{"code": f"c{i:06d}", "display": f"Concept number {i}"} for i in range(count)]
    with store.writing() as conn:
        create_many(conn, [
            NewResource("CodeSystem", "tv-codes", {"resourceType": "CodeSystem", "url": "urn:bench:codes",
                                                   "status": "active", "content": "complete", "concept": concepts}),
            NewResource("ValueSet", "tv-all", {"resourceType": "ValueSet", "url": "urn:bench:all", "status": "active",
                                               "compose": {"include": [{"system": "urn:bench:codes"}]}})])
    engine.dispose()


def timed(action) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    count = action()
    return time.perf_counter() - started, count


def run_view(http: httpx.Client, fmt: str) -> int:
    answer = http.post("/$viewdefinition-run", json={"resourceType": "Parameters", "parameter": [
        {"name": "viewResource", "resource": VIEW}, {"name": "_format", "valueString": fmt}]})
    answer.raise_for_status()
    lines = answer.content.count(b"\n")
    return lines - 1 if fmt == "csv" else lines


def export_view(http: httpx.Client) -> int:
    kick = http.post("/$viewdefinition-export", headers={"Prefer": "respond-async"}, json={
        "resourceType": "Parameters", "parameter": [
            {"name": "view", "part": [{"name": "name", "valueString": "bench"}, {"name": "viewResource", "resource": VIEW}]},
            {"name": "_format", "valueString": "ndjson"}]})
    kick.raise_for_status()
    while (status := http.get(kick.headers["Content-Location"])).status_code == 202:
        time.sleep(0.2)
    status.raise_for_status()
    [url] = [part["valueUri"] for p in status.json()["parameter"] if p["name"] == "output"
             for part in p["part"] if part["name"] == "location"]
    rows = http.get(url).content.count(b"\n")
    http.delete(kick.headers["Content-Location"])
    return rows


def search_pages(http: httpx.Client) -> int:
    seen, url = 0, "/Observation?_count=1000"
    while url:
        page = http.get(url).json()
        seen += len(page.get("entry", []))
        url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), "")
    return seen


def expand_pages(http: httpx.Client) -> int:
    seen, offset, total = 0, 0, None
    while total is None or offset < total:
        page = http.get("/ValueSet/tv-all/$expand", params={"count": PAGE, "offset": offset}).json()["expansion"]
        total = page["total"]
        seen += len(page.get("contains", []))
        offset += PAGE
    return seen


def read_codesystem(http: httpx.Client) -> int:
    return len(http.get("/CodeSystem/tv-codes").json()["concept"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 resources")
    args = parser.parse_args()
    count = 10_000 if args.quick else args.resources
    _terminate_on_sigterm()
    report = Report(f"$viewdefinition-run, $viewdefinition-export and $expand on {count:,} resources",
                    ["backend", "measure", "items", "seconds", "items/s", "baseline items/s", "ratio"])
    for backend in ("sqlite", "postgresql"):
        with tempfile.TemporaryDirectory() as tmp, backend_databases(backend, Path(tmp)) as (url, _raw):
            load(url, count)
            with fhirfus_server(url, Path(tmp)) as running, httpx.Client(base_url=running.base, timeout=600) as http:
                base_s, base_n = timed(lambda: search_pages(http))
                run_rate = 0.0
                for fmt in ("ndjson", "csv"):
                    seconds, rows = timed(lambda fmt=fmt: run_view(http, fmt))
                    run_rate = run_rate or rows / seconds
                    report.rows.append([backend, f"$viewdefinition-run ({fmt}) rows vs search pages", f"{rows:,}",
                                        f"{seconds:.1f}", f"{rows / seconds:,.0f}", f"{base_n / base_s:,.0f}",
                                        f"{(rows / seconds) / (base_n / base_s):.2f}×"])
                seconds, rows = timed(lambda: export_view(http))
                report.rows.append([backend, "$viewdefinition-export (ndjson, kick-off to download) vs the run",
                                    f"{rows:,}", f"{seconds:.1f}", f"{rows / seconds:,.0f}", f"{run_rate:,.0f}",
                                    f"{(rows / seconds) / run_rate:.2f}×"])
                read_s, read_n = timed(lambda: read_codesystem(http))
                seconds, concepts = timed(lambda: expand_pages(http))
                report.rows.append([backend, f"$expand concepts (pages of {PAGE:,}) vs reading the CodeSystem",
                                    f"{concepts:,}", f"{seconds:.1f}", f"{concepts / seconds:,.0f}",
                                    f"{read_n / read_s:,.0f}", f"{(concepts / seconds) / (read_n / read_s):.2f}×"])
    report.notes.append("one server process; the client in this process; baseline measured on the same server")
    Console().print(report.rich())
    print(report.markdown())


if __name__ == "__main__":
    main()
