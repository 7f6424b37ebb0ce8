"""Bulk Data export figures: throughput and the server's peak memory while exporting (not a test).

``python -m bench.bulk_export [--resources N] [--keep DB]`` creates a throw-away
PostgreSQL database on ``FHIRFUS_TEST_POSTGRES_URL``, loads N synthetic resources (Patients with
Observations, Conditions and Encounters, about 1 KB each, through ``repository.create_many`` so
the search index is filled as in production), starts ``fhirfus serve`` as a separate process,
runs a system-level ``$export`` over HTTP and prints:

- resources per second from kick-off to the completed manifest (and bytes written);
- the server's resident memory before the export and its peak while exporting (sampled from
  /proc every 20 ms), the figure the ≤ 300 MB aim is about;
- the same for a Patient-level export (the compartment query over the reference index) and for
  a ``_typeFilter`` export (a search compiled to SQL per page).

It asserts nothing; ``make bench`` can call it.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import func, select, text

from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.db.visibility import EVERYTHING
from fhirfus.domain.conformance import load_conformance
from fhirfus.settings import test_postgres_url
from fhirfus.store.repository import NewResource, Store, create_many
from fhirfus.testing import free_port, scratch_postgres

POSTGRES_URL = test_postgres_url()
CHUNK = 2000


def synthetic(index: int, rng: random.Random) -> NewResource:
    """Resource ``index`` of the synthetic cohort: every tenth is a Patient, the rest point at one."""
    patient = f"bp-{index // 10:07d}"
    kind = index % 10
    if kind == 0:
        content = {
            "resourceType": "Patient", "identifier": [{"system": "urn:fhirfus:bench", "value": patient}],
            "name": [{"family": f"Family{index}", "given": ["Given"]}], "gender": rng.choice(["female", "male"]),
            "birthDate": f"19{rng.randint(40, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
            "address": [{"city": "Zürich", "country": "CH", "postalCode": f"80{rng.randint(10, 99)}"}],
        }
        return NewResource("Patient", patient, content)
    subject = {"reference": f"Patient/{patient}"}
    if kind <= 6:
        total = rng.randint(0, 85)
        content = {
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "survey"}]}],
            "code": {"coding": [{"system": "https://fhirfus.example.org/CodeSystem/twstrs", "code": "total",
                                 "display": "TWSTRS total score"}]},
            "subject": subject, "effectiveDateTime": f"2025-0{1 + index % 9}-1{index % 10}T09:00:00Z",
            "valueQuantity": {"value": total, "unit": "score", "system": "http://unitsofmeasure.org",
                              "code": "{score}"},
            "note": [{"text": "Assessed after MRgFUS pallidothalamic tractotomy; head tremor reduced."}],
        }
        return NewResource("Observation", f"bo-{index:08d}", content)
    if kind <= 8:
        content = {
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": subject, "period": {"start": "2025-03-01T08:00:00Z", "end": "2025-03-01T12:00:00Z"},
            "reasonCode": [{"text": "Cervical dystonia, MRgFUS follow-up"}],
        }
        return NewResource("Encounter", f"be-{index:08d}", content)
    content = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "445006008",
                             "display": "Cervical dystonia"}]},
        "subject": subject, "onsetDateTime": "2019-05-01",
    }
    return NewResource("Condition", f"bc-{index:08d}", content)


def load(url: str, count: int) -> float:
    """Fill the database; seconds taken."""
    load_conformance()
    migrate.upgrade(engine := make_engine(url))
    store = Store(engine)
    rng = random.Random(7)
    started = time.perf_counter()
    for start in range(0, count, CHUNK):
        items = [synthetic(i, rng) for i in range(start, min(count, start + CHUNK))]
        with store.writing() as conn:
            create_many(conn, items)
        print(f"\r  loaded {start + len(items):,}/{count:,}", end="", flush=True)
    print()
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    engine.dispose()
    return time.perf_counter() - started


@contextmanager
def database(keep: str | None) -> Iterator[str]:
    """A throw-away database, or the one named ``keep`` (created if missing, reused, never dropped)."""
    with scratch_postgres(prefix="fhirfus_bulk_bench", keep=keep) as (url,):
        yield url


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class Figures:
    resources: int
    seconds: float
    bytes_written: int
    rss_before_mb: float
    rss_peak_mb: float


def export(base: str, pid: int, path: str, export_dir: Path) -> Figures:
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kb(pid))
            time.sleep(0.02)

    before = _rss_kb(pid)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with httpx.Client(base_url=base, timeout=60) as client:
        started = time.perf_counter()
        kick = client.get(path, headers={"Prefer": "respond-async", "Accept": "application/fhir+json"})
        kick.raise_for_status()
        location = kick.headers["content-location"]
        while True:
            status = client.get(location)
            if status.status_code != 202:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    status.raise_for_status()
    manifest = status.json()
    count = sum(item["count"] for item in manifest["output"])
    written = sum(f.stat().st_size for f in export_dir.rglob("*.ndjson"))
    with httpx.Client(timeout=60) as client:
        client.delete(location)
    return Figures(count, elapsed, written, before / 1024, peak[0] / 1024)


@contextmanager
def server(url: str, export_dir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = dict(os.environ, FHIRFUS_DATABASE_URL=url, FHIRFUS_AUTH="off", FHIRFUS_EXPORT_DIR=str(export_dir))
    script = Path(sys.executable).with_name("fhirfus")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "fhirfus.cli"]
    process = subprocess.Popen([*command, "serve", "--port", str(port), "--no-migrate"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--keep", help="database name to keep (and reuse if it exists: no reload)")
    args = parser.parse_args()
    with database(args.keep) as url:
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                present = conn.execute(select(func.count()).select_from(EVERYTHING.resources())).scalar_one()
        except Exception:
            present = 0
        finally:
            engine.dispose()
        if present < args.resources:
            print(f"loading {args.resources:,} resources into PostgreSQL …")
            seconds = load(url, args.resources)
            print(f"  {args.resources / seconds:,.0f} resources/s loaded")
        export_dir = Path(tempfile.mkdtemp(prefix="fhirfus-bulk-bench-"))
        try:
            with server(url, export_dir) as (base, pid):
                runs = (("system $export", "/$export"), ("Patient/$export", "/Patient/$export"),
                        ("_typeFilter", "/$export?_type=Observation&_typeFilter=Observation%3Fstatus%3Dfinal"))
                for label, path in runs:
                    figures = export(base, pid, path, export_dir)
                    print(
                        f"{label}: {figures.resources:,} resources in {figures.seconds:.1f} s = "
                        f"{figures.resources / figures.seconds:,.0f} resources/s (aim ≥ 20,000), "
                        f"{figures.bytes_written / 1e6:,.0f} MB NDJSON; server RSS {figures.rss_before_mb:.0f} MB "
                        f"before, peak {figures.rss_peak_mb:.0f} MB while exporting (aim ≤ 300 MB; the export's "
                        f"own share: {figures.rss_peak_mb - figures.rss_before_mb:+.0f} MB)"
                    )
        finally:
            shutil.rmtree(export_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
