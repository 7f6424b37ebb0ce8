"""The cost of authentication on the read rate (issue: aim ≤ 10 % slower with FHIRFUS_AUTH=smart).

One PostgreSQL database, 500 stored Observations, the real server in its own process, 4 keep-alive
client threads reading by id: once with authentication off, once with bearer tokens (SMART backend
services, an RS384-signed client assertion exchanged at /auth/token), alternating three times so
drift on a shared machine hits both alike; the best run of each is reported. With auth on, every
read is also written to the audit trail (by the server's audit writer process).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

import bench  # tools/bench.py: tools/ leads sys.path when a tool runs as a script
from fhirfus.auth.clients import register
from fhirfus.store import repository
from fhirfus.store.engine import make_engine
from fhirfus.store.repository import NewResource, Store

CLIENTS, READS = 4, int(os.environ.get("BENCH_AUTH_READS", "6000"))
ROUNDS = 3  # off/smart alternations: drift on a shared machine hits both alike; the best of each is kept
SECRET = "bench-auth-secret-" + uuid.uuid4().hex


def _token(base: str, client_id: str, key: object, kid: str) -> str:
    now = int(time.time())
    assertion = jwt.encode({"iss": client_id, "sub": client_id, "aud": base + "/auth/token", "exp": now + 240,
                            "jti": str(uuid.uuid4())}, key, algorithm="RS384", headers={"kid": kid})
    response = httpx.post(base + "/auth/token", data={
        "grant_type": "client_credentials", "scope": "system/*.rs", "client_assertion": assertion,
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


def main() -> None:
    with bench.postgres_databases(1) as (url,), tempfile.TemporaryDirectory(prefix="fhirfus-bench-") as tmp:
        bench.migrated(url)
        engine = make_engine(url)
        try:
            store = Store(engine)
            ids = [str(uuid.uuid4()) for _ in range(500)]
            with store.writing() as conn:
                repository.create_many(conn, [NewResource("Observation", i, {
                    "resourceType": "Observation", "status": "final", "code": {"text": "bench"},
                    "valueQuantity": {"value": n}}) for n, i in enumerate(ids)])
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())) | {"kid": "k1", "alg": "RS384"}
            client = register(store, "bench", "admin", "system/*.rs", {"keys": [jwk]})
        finally:
            engine.dispose()
        results: dict[str, list[bench.Measurement]] = {"off": [], "smart": []}
        for mode in ("off", "smart") * ROUNDS:
            port = bench.free_port()
            env = {**os.environ, "FHIRFUS_DATABASE_URL": url, "FHIRFUS_AUTH": mode, "FHIRFUS_TOKEN_SECRET": SECRET,
                   "FHIRFUS_RATE_LIMIT": "0"}
            command = [*bench.fhirfus_command(), "serve", "--port", str(port), "--no-migrate"]
            with bench.server_process(command, env, port, Path(tmp) / f"fhirfus-{port}.log") as server:
                root = server.base.removesuffix("/fhir")
                headers = {"Authorization": f"Bearer {_token(root, client.client_id, key, 'k1')}"} if mode == "smart" else {}
                _reads(server.base, ids, headers, "warm-up")
                results[mode].append(_reads(server.base, ids, headers, mode))
    best = {mode: max(runs, key=lambda m: m.rate) for mode, runs in results.items()}
    print(f"\nAuthentication cost on reads (PostgreSQL, {CLIENTS} keep-alive clients, {READS} GET by id, "
          f"load average {os.getloadavg()[0]:.1f})")
    print(f"{'mode':<8}{'reads/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'errors':>8}")
    for mode, m in best.items():
        print(f"{mode:<8}{m.rate:>10.0f}{m.percentile_ms(0.50):>9.2f}{m.percentile_ms(0.95):>9.2f}{m.errors:>8}")
    slower = 100 * (1 - best["smart"].rate / best["off"].rate)
    print(f"bearer tokens: {slower:.1f} % slower (aim ≤ 10 %) {'✓' if slower <= 10 else '✗'}")
    bench.RESULTS.parent.mkdir(exist_ok=True)
    with bench.RESULTS.open("a") as handle:
        handle.write("\n### Authentication cost\n\n| mode | reads/s | p50 ms | p95 ms |\n|---|---|---|---|\n")
        for mode, m in best.items():
            handle.write(f"| {mode} | {m.rate:.0f} | {m.percentile_ms(0.50):.2f} | {m.percentile_ms(0.95):.2f} |\n")
        handle.write(f"\nbearer tokens: {slower:.1f} % slower (aim ≤ 10 %)\n")


if __name__ == "__main__":
    main()
