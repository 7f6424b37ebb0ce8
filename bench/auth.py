"""The cost of authentication, site confinement and the audit trail (issue: aim ≤ 10 % each).

One PostgreSQL database, the real server in its own process (``fhirfus serve``, one worker per
core), 4 keep-alive client threads. Three modes, alternated ``ROUNDS`` times so drift on a shared
machine hits all alike, the best run of each kept:

- ``off``: ``FHIRFUS_AUTH=off``, no token, no audit;
- ``admin``: a bearer token of an admin client (unconfined), every request audited;
- ``site``: a bearer token of a site client: every read filtered to its site, every write labelled
  and its AuditEvent written in the write's transaction.

Two workloads: reads by id of 500 Observations owned by the site, and transaction Bundles of 100
entries (the ingest path of ``bench_ingest``).

Then what confinement does not hide: a site client's search reads the index rows of every site
that match, and filters on the site afterwards, so its time grows with another site's matches.
``count oracle`` times site A's ``Observation?code=X`` when site B holds ``ORACLE_ROWS`` resources
with code X, against a code nobody uses.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import harness as bench  # bench/harness.py: bench/ leads sys.path when a benchmark runs as a script
import httpx
import ingest as bench_ingest
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from fhirfus.auth.clients import register
from fhirfus.db.engine import make_engine
from fhirfus.db.visibility import SITE_SYSTEM
from fhirfus.store import repository
from fhirfus.store.repository import NewResource, Store

CLIENTS, READS = 4, int(os.environ.get("BENCH_AUTH_READS", "6000"))
BUNDLES = int(os.environ.get("BENCH_AUTH_BUNDLES", "40"))
ORACLE_ROWS = (100, 1000, 4000)
ORACLE_SAMPLES = 300
ROUNDS = 3
MODES = ("off", "admin", "site")
SITE = "B"
SECRET = "bench-auth-secret-" + uuid.uuid4().hex


def _token(base: str, client_id: str, key: object) -> str:
    now = int(time.time())
    assertion = jwt.encode({"iss": client_id, "sub": client_id, "aud": base + "/auth/token", "exp": now + 240,
                            "jti": str(uuid.uuid4())}, key, algorithm="RS384", headers={"kid": "k1"})
    response = httpx.post(base + "/auth/token", data={
        "grant_type": "client_credentials", "scope": "system/*.cruds", "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    response.raise_for_status()
    return response.json()["access_token"]


def _reads(base: str, ids: list[str], headers: dict[str, str], label: str) -> bench.Measurement:
    sessions = [httpx.Client(base_url=base, headers=headers) for _ in range(CLIENTS)]

    def operation(worker: int, job: int) -> str | None:
        status = sessions[worker].get(f"/Observation/{ids[job % len(ids)]}").status_code
        return None if status == 200 else f"HTTP {status}"

    try:
        return bench.drive_threads(CLIENTS, READS, operation, label, bench.Probe())
    finally:
        for session in sessions:
            session.close()


def _ingest(base: str, headers: dict[str, str], bundles: list, label: str) -> bench.Measurement:
    sessions = [httpx.Client(base_url=base, headers={**bench.HEADERS, **headers}, timeout=300) for _ in range(CLIENTS)]

    def operation(worker: int, job: int) -> str | None:
        response = sessions[worker].post("", content=bundles[job].body)
        return None if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:200]}"

    try:
        return bench.drive_threads(CLIENTS, len(bundles), operation, label, bench.Probe())
    finally:
        for session in sessions:
            session.close()


def _setup(url: str) -> tuple[list[str], dict[str, tuple[str, object]]]:
    """500 Observations of the site; an admin and a site client with their keys."""
    engine = make_engine(url)
    try:
        store = Store(engine)
        ids = [str(uuid.uuid4()) for _ in range(500)]
        with store.writing() as conn:
            repository.create_many(conn, [NewResource("Observation", i, {
                "resourceType": "Observation", "status": "final", "code": {"text": "bench"},
                "meta": {"security": [{"system": SITE_SYSTEM, "code": SITE}]},
                "valueQuantity": {"value": n}}) for n, i in enumerate(ids)])
        clients = {}
        for name, role, site in (("admin", "admin", None), ("site", "site", SITE), ("other", "site", "A")):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())) | {"kid": "k1", "alg": "RS384"}
            client = register(store, f"bench {name}", role, "system/*.cruds", {"keys": [jwk]}, site)
            clients[name] = (client.client_id, key)
        return ids, clients
    finally:
        engine.dispose()


def _count_oracle(base: str, clients: dict[str, tuple[str, object]]) -> list[tuple[int, float, float]]:
    """(B's matching resources, A's median µs for code X, for an unused code) per size."""
    root = base.removesuffix("/fhir")
    b = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {_token(root, *clients['site'])}"}, timeout=300)
    a = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {_token(root, *clients['other'])}"})
    found = []
    try:
        held = 0
        for rows in ORACLE_ROWS:
            while held < rows:
                batch = min(1000, rows - held)
                entries = [{"resource": {"resourceType": "Observation", "status": "final",
                                         "code": {"coding": [{"system": "urn:oracle", "code": "X"}]}},
                            "request": {"method": "POST", "url": "Observation"}} for _ in range(batch)]
                b.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}).raise_for_status()
                held += batch
            timings: dict[str, list[float]] = {"X": [], "unused": []}
            for i in range(ORACLE_SAMPLES):
                for code in (("X", "unused") if i % 2 else ("unused", "X")):
                    started = time.perf_counter()
                    a.get("/Observation", params={"code": f"urn:oracle|{code}"}).raise_for_status()
                    timings[code].append(time.perf_counter() - started)
            found.append((rows, statistics.median(timings["X"]) * 1e6, statistics.median(timings["unused"]) * 1e6))
    finally:
        a.close()
        b.close()
    return found


def _table(title: str, unit: str, best: dict[str, bench.Measurement], per_op: int = 1) -> list[str]:
    lines = [title, f"{'mode':<8}{unit:>12}{'p50 ms':>9}{'p95 ms':>9}{'errors':>8}{'vs off':>9}"]
    for mode, m in best.items():
        cost = 100 * (1 - best[mode].rate / best["off"].rate)
        lines.append(f"{mode:<8}{m.rate * per_op:>12.0f}{m.percentile_ms(0.50):>9.2f}{m.percentile_ms(0.95):>9.2f}"
                     f"{m.errors:>8}{'' if mode == 'off' else f'{-cost:+.1f} %':>9}")
    for mode in ("admin", "site"):
        cost = 100 * (1 - best[mode].rate / best["off"].rate)
        lines.append(f"{mode}: {cost:.1f} % slower than off (aim ≤ 10 %) {'✓' if cost <= 10 else '✗'}")
    return lines


def main() -> None:
    rng = random.Random(bench_ingest.SEED)
    with bench.postgres_databases(1) as (url,), tempfile.TemporaryDirectory(prefix="fhirfus-bench-") as tmp:
        bench.migrated(url)
        ids, clients = _setup(url)
        reads: dict[str, list[bench.Measurement]] = {mode: [] for mode in MODES}
        ingests: dict[str, list[bench.Measurement]] = {mode: [] for mode in MODES}
        first = 1
        for mode in MODES * ROUNDS:
            port = bench.free_port()
            env = {**os.environ, "FHIRFUS_DATABASE_URL": url, "FHIRFUS_AUTH": "off" if mode == "off" else "smart",
                   "FHIRFUS_TOKEN_SECRET": SECRET, "FHIRFUS_RATE_LIMIT": "0"}
            command = [*bench.fhirfus_command(), "serve", "--port", str(port), "--no-migrate"]
            with bench.server_process(command, env, port, Path(tmp) / f"fhirfus-{port}.log") as server:
                root = server.base.removesuffix("/fhir")
                headers = {} if mode == "off" else {"Authorization": f"Bearer {_token(root, *clients[mode])}"}
                _reads(server.base, ids, headers, "warm-up")
                reads[mode].append(_reads(server.base, ids, headers, mode))
                bundles = bench_ingest.make_bundles(BUNDLES, bench_ingest.BUNDLE_ENTRIES, rng, first)
                first += BUNDLES * bench_ingest.BUNDLE_ENTRIES
                ingests[mode].append(_ingest(server.base, headers, bundles, mode))
        port = bench.free_port()
        env = {**os.environ, "FHIRFUS_DATABASE_URL": url, "FHIRFUS_AUTH": "smart", "FHIRFUS_TOKEN_SECRET": SECRET,
               "FHIRFUS_RATE_LIMIT": "0"}
        command = [*bench.fhirfus_command(), "serve", "--port", str(port), "--no-migrate"]
        with bench.server_process(command, env, port, Path(tmp) / f"fhirfus-{port}.log") as server:
            oracle = _count_oracle(server.base, clients)
    best_reads = {mode: max(runs, key=lambda m: m.rate) for mode, runs in reads.items()}
    best_ingest = {mode: max(runs, key=lambda m: m.rate) for mode, runs in ingests.items()}
    machine = f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores"
    lines = [*_table(f"\nAuthentication, confinement and audit on reads (PostgreSQL, {CLIENTS} clients, "
                     f"{READS} GET by id, {machine})", "reads/s", best_reads),
             *_table(f"\n... on transaction ingest ({BUNDLES} Bundles of {bench_ingest.BUNDLE_ENTRIES} entries "
                     f"per run)", "entries/s", best_ingest, bench_ingest.BUNDLE_ENTRIES),
             f"\nCount oracle: site A's Observation?code=X when site B holds n resources with code X "
             f"(median of {ORACLE_SAMPLES}, µs; no aim, a known limit)",
             f"{'n':>6}{'code X':>10}{'unused':>10}{'ratio':>8}",
             *[f"{n:>6}{x:>10.0f}{u:>10.0f}{x / u:>8.2f}" for n, x, u in oracle]]
    print("\n".join(lines))
    bench.RESULTS.parent.mkdir(exist_ok=True)
    with bench.RESULTS.open("a") as handle:
        handle.write("\n### Authentication, confinement and audit\n\n```\n" + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
