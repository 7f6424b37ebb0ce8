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
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhirfus.auth.clients import register  # noqa: E402
from fhirfus.store import migrate, repository  # noqa: E402
from fhirfus.store.engine import make_engine  # noqa: E402
from fhirfus.store.repository import NewResource, Store  # noqa: E402

ADMIN_URL = os.environ.get("FHIRFUS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CLIENTS, READS = 4, int(os.environ.get("BENCH_AUTH_READS", "6000"))
ROUNDS = 3  # off/smart alternations: drift on a shared machine hits both alike; the best of each is kept
SECRET = "bench-auth-secret-" + uuid.uuid4().hex


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(url: str, auth: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    env = {**os.environ, "FHIRFUS_DATABASE_URL": url, "FHIRFUS_AUTH": auth, "FHIRFUS_TOKEN_SECRET": SECRET,
           "FHIRFUS_RATE_LIMIT": "0"}
    process = subprocess.Popen([str(ROOT / ".venv/bin/fhirfus"), "serve", "--port", str(port), "--no-migrate"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(base + "/fhir/metadata", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("server did not start")


def _token(base: str, client_id: str, key: object, kid: str) -> str:
    now = int(time.time())
    assertion = jwt.encode({"iss": client_id, "sub": client_id, "aud": base + "/auth/token", "exp": now + 240,
                            "jti": str(uuid.uuid4())}, key, algorithm="RS384", headers={"kid": kid})
    response = httpx.post(base + "/auth/token", data={
        "grant_type": "client_credentials", "scope": "system/*.rs", "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    response.raise_for_status()
    return response.json()["access_token"]


def _reads(base: str, ids: list[str], headers: dict[str, str]) -> tuple[float, float, float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        mine = []
        with httpx.Client(base_url=base + "/fhir", headers=headers) as http:
            for n in range(offset, READS, CLIENTS):
                start = time.perf_counter()
                assert http.get(f"/Observation/{ids[n % len(ids)]}").status_code == 200
                mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CLIENTS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100)
    return READS / elapsed, cuts[49] * 1000, cuts[94] * 1000


def main() -> None:
    name = f"fhirfus_bench_auth_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        engine = make_engine(url)
        migrate.upgrade(engine)
        store = Store(engine)
        ids = [str(uuid.uuid4()) for _ in range(500)]
        with store.writing() as conn:
            repository.create_many(conn, [NewResource("Observation", i, {
                "resourceType": "Observation", "status": "final", "code": {"text": "bench"},
                "valueQuantity": {"value": n}}) for n, i in enumerate(ids)])
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())) | {"kid": "k1", "alg": "RS384"}
        client = register(store, "bench", "admin", "system/*.rs", {"keys": [jwk]})
        engine.dispose()
        results: dict[str, list[tuple[float, float, float]]] = {"off": [], "smart": []}
        for mode in ("off", "smart") * ROUNDS:
            process, base = _serve(url, mode)
            try:
                headers = {"Authorization": f"Bearer {_token(base, client.client_id, key, 'k1')}"} if mode == "smart" else {}
                _reads(base, ids, headers)  # warm-up
                results[mode].append(_reads(base, ids, headers))
            finally:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=10)
        best = {mode: max(runs) for mode, runs in results.items()}
        print(f"\nAuthentication cost on reads (PostgreSQL, {CLIENTS} keep-alive clients, {READS} GET by id, "
              f"load average {os.getloadavg()[0]:.1f})")
        print(f"{'mode':<8}{'reads/s':>10}{'p50 ms':>9}{'p95 ms':>9}")
        for mode, (rate, p50, p95) in best.items():
            print(f"{mode:<8}{rate:>10.0f}{p50:>9.2f}{p95:>9.2f}")
        slower = 100 * (1 - best["smart"][0] / best["off"][0])
        print(f"bearer tokens: {slower:.1f} % slower (aim ≤ 10 %) {'✓' if slower <= 10 else '✗'}")
        out = ROOT / "bench-results"
        out.mkdir(exist_ok=True)
        with (out / "bench.md").open("a") as handle:
            handle.write(f"\n### Authentication cost\n\n| mode | reads/s | p50 ms | p95 ms |\n|---|---|---|---|\n")
            for mode, (rate, p50, p95) in best.items():
                handle.write(f"| {mode} | {rate:.0f} | {p50:.2f} | {p95:.2f} |\n")
            handle.write(f"\nbearer tokens: {slower:.1f} % slower (aim ≤ 10 %)\n")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
