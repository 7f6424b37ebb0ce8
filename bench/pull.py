"""`make bench`, the hub's pull: end-to-end rate of ``fhirfus pull`` beside a local load (not a test).

``python bench/pull.py [--resources N] [--quick]`` on throw-away PostgreSQL databases
(``FHIRFUS_TEST_POSTGRES_URL``):

1. a site database gets N synthetic resources labelled for site ``bench`` (Patients with
   Observations, Encounters and Conditions, as ``bench/bulk_export.py`` makes them), and is
   served by ``fhirfus serve`` in its own process with SMART authentication on; the hub is
   registered there as a site client with an RS384 key;
2. the hub (a second database) pulls it with ``fhirfus.pull.run.pull_once`` in this process:
   token, kick-off, polling, downloads, loads under the site label with ids ``bench-{id}``, the
   Provenance. The time runs from the kick-off to the last committed load;
3. the baseline, in the same run: the same data exported to NDJSON on disk
   (``fhirfus.bulk.local``) and loaded into a third database by ``fhirfus load``'s code
   (``fhirfus.ingest.load.load_files``), timed from the first to the last load.

It prints resources per second for both and their ratio, and appends them to
``bench-results/bench.md``. It asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import harness as bench  # bench/harness.py: bench/ leads sys.path when a benchmark runs as a script
import jwt
import orjson
from bulk_export import synthetic
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select, text

from fhirfus.auth.clients import register
from fhirfus.bulk.local import export_to_directory, local_request
from fhirfus.db.engine import make_engine
from fhirfus.db.tables import resources
from fhirfus.db.visibility import SITE_SYSTEM
from fhirfus.domain.conformance import load_conformance
from fhirfus.heap import freeze_start_up_heap
from fhirfus.ingest.load import load_files
from fhirfus.pull import definitions
from fhirfus.pull.run import pull_once
from fhirfus.settings import Settings
from fhirfus.store.repository import NewResource, Store, create_many
from fhirfus.testing import free_port

SITE = "bench"
CHUNK = 2000
console = bench.console


def fill_site(url: str, count: int) -> None:
    """N resources of site ``bench`` (the label puts them in the site's rows)."""
    bench.migrated(url)
    engine = make_engine(url)
    store = Store(engine)
    rng = random.Random(11)
    label = {"security": [{"system": SITE_SYSTEM, "code": SITE}]}
    for start in range(0, count, CHUNK):
        items = [synthetic(i, rng) for i in range(start, min(count, start + CHUNK))]
        with store.writing() as conn:
            create_many(conn, [NewResource(i.res_type, i.res_id, {**i.content, "meta": label}) for i in items])
        console.print(f"\r  site: {start + len(items):,}/{count:,}", end="")
    console.print()
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    engine.dispose()


def hub_client(url: str, folder: Path) -> tuple[str, Path]:
    """The hub's client at the site, with its private key in a PEM file."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    engine = make_engine(url)
    client = register(Store(engine), "the study hub", "site", "system/*.rs",
                      {"keys": [{**jwk, "alg": "RS384", "kid": "hub"}]}, SITE)
    engine.dispose()
    path = folder / "hub.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return client.client_id, path


def loaded_count(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(resources).where(
            resources.c.site == SITE, resources.c.res_type != "Provenance")).scalar_one()
    engine.dispose()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="5,000 resources: a smoke run")
    args = parser.parse_args()
    count = 5_000 if args.quick else args.resources
    bench._terminate_on_sigterm()
    load_conformance()
    freeze_start_up_heap()
    with tempfile.TemporaryDirectory(prefix="fhirfus-pull-bench-") as work, \
            bench.postgres_databases(3) as (site_url, hub_url, baseline_url):
        folder = Path(work)
        console.print(f"[bold]pull bench[/bold]: {count:,} resources")
        fill_site(site_url, count)
        client_id, key = hub_client(site_url, folder)
        port = free_port()
        env = dict(os.environ, FHIRFUS_DATABASE_URL=site_url, FHIRFUS_AUTH="smart",
                   FHIRFUS_TOKEN_SECRET=secrets.token_hex(32), FHIRFUS_EXPORT_DIR=str(folder / "site-exports"),
                   FHIRFUS_RATE_LIMIT_PER_MINUTE="1000000")
        command = [*bench.fhirfus_command(), "serve", "--port", str(port), "--no-migrate"]
        bench.migrated(hub_url)
        hub = Store(make_engine(hub_url))
        with bench.server_process(command, env, port, folder / "site.log") as site:
            definition = definitions.save(hub, definitions.Definition(
                "bench", site.base, client_id, str(key), SITE), datetime.now(UTC))
            started = time.perf_counter()
            report = pull_once(hub, definition, folder / "pulls", lambda: datetime.now(UTC))
            pull_s = time.perf_counter() - started
        pulled = loaded_count(hub_url)

        out = folder / "local-export"
        export_to_directory(Store(make_engine(site_url)), Settings(), local_request(None, None), out)
        files = sorted(p for p in out.iterdir() if p.suffix == ".ndjson"
                       and p.name.split(".")[0] in {"Patient", "Observation", "Encounter", "Condition"})
        bench.migrated(baseline_url)
        started = time.perf_counter()
        baseline = load_files(Store(make_engine(baseline_url)), files)
        load_s = time.perf_counter() - started

    pull_rate, load_rate = pulled / pull_s, baseline.loaded / load_s
    table = bench.Report(
        f"fhirfus pull, {count:,} resources (PostgreSQL, site server with SMART auth, hub in-process)",
        ["path", "resources", "seconds", "resources/s"],
        [["pull: kick-off → export → download → loaded (+ Provenance)", f"{pulled:,}", f"{pull_s:,.1f}",
          f"{pull_rate:,.0f}"],
         ["baseline: `fhirfus load` of the same NDJSON from disk", f"{baseline.loaded:,}", f"{load_s:,.1f}",
          f"{load_rate:,.0f}"]],
        [f"pull / local load: {pull_rate / load_rate:.2f}", f"pull report: {report.line()}",
         f"revision {bench._git_revision()}"])
    console.print(table.rich())
    bench.RESULTS.parent.mkdir(exist_ok=True)
    with bench.RESULTS.open("a") as results:
        results.write(table.markdown() + "\n")


if __name__ == "__main__":
    main()
