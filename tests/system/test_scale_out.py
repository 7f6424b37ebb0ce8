"""Two fhirfus hosts behind a real load balancer work as one server: a Bulk Data export whose host
dies half-way is taken over by the other host and completes, every file reachable through the
balancer. The hosts are network namespaces on this machine (``fhirfus/testing_hosts.py``) sharing
one PostgreSQL database and one export directory; HAProxy spreads the requests."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import select

from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.db.tables import export_jobs
from fhirfus.store import repository
from fhirfus.store.repository import NewResource, Store
from fhirfus.testing import scratch_postgres
from fhirfus.testing_hosts import hosts_behind_balancer, socket_url, unavailable
from tests.auth_helpers import make_client

PATIENTS, OBSERVATIONS_EACH = 400, 60  # enough that the export is still running when its host is killed

pytestmark = pytest.mark.skipif(bool(reason := unavailable()), reason=reason or "")


def _seed(store: Store) -> Counter[str]:
    for first in range(0, PATIENTS, 50):
        batch: list[NewResource] = []
        for p in range(first, first + 50):
            batch.append(NewResource("Patient", f"p{p}", {"resourceType": "Patient", "gender": "female"}))
            batch += [NewResource("Observation", f"o{p}-{n}", {
                "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/p{p}"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "valueQuantity": {"value": 60 + n, "unit": "/min"}}) for n in range(OBSERVATIONS_EACH)]
        with store.writing() as conn:
            repository.create_many(conn, batch)
    return Counter({"Patient": PATIENTS, "Observation": PATIENTS * OBSERVATIONS_EACH})


def test_a_bulk_export_survives_the_death_of_its_host(tmp_path: Path) -> None:
    with scratch_postgres() as (url,):
        engine = make_engine(url)
        migrate.upgrade(engine)
        seeded = _seed(Store(engine))
        env = {**os.environ, "FHIRFUS_DATABASE_URL": socket_url(url), "FHIRFUS_AUTH": "off",
               "FHIRFUS_EXPORT_DIR": str(tmp_path / "exports"), "FHIRFUS_JOB_LEASE_SECONDS": "2",
               "FHIRFUS_EXPORT_FILE_MAX_RESOURCES": "2000"}
        try:
            with hosts_behind_balancer(2, env, tmp_path) as cluster, httpx.Client(timeout=60) as http:
                kick_off = http.get(f"{cluster.balancer}/fhir/$export?_type=Patient,Observation",
                                    headers={"Prefer": "respond-async", "Accept": "application/fhir+json"})
                assert kick_off.status_code == 202, kick_off.text
                owner = cluster.host(kick_off.headers["X-Fhirfus-Host"])
                owner.kill()
                with engine.connect() as conn:
                    status_at_death = conn.execute(select(export_jobs.c.status)).scalar_one()
                assert status_at_death in ("queued", "running"), "the export finished before its host died"

                location = kick_off.headers["Content-Location"]
                assert location.startswith(cluster.balancer)
                for _ in range(240):
                    status = http.get(location)
                    if status.status_code != 202:
                        break
                    http.get(f"{cluster.balancer}/fhir/metadata")  # the survivor keeps answering meanwhile
                    time.sleep(0.5)
                assert status.status_code == 200, status.text
                assert status.headers["X-Fhirfus-Host"] != owner.name
                exported: Counter[str] = Counter()
                ids: set[tuple[str, str]] = set()
                for item in status.json()["output"]:
                    body = http.get(item["url"])
                    assert body.status_code == 200
                    for line in body.content.splitlines():
                        resource = orjson.loads(line)
                        exported[resource["resourceType"]] += 1
                        ids.add((resource["resourceType"], resource["id"]))
                assert exported == seeded  # complete: every resource once, none twice
                assert len(ids) == sum(seeded.values())
        finally:
            engine.dispose()


def test_replay_checks_and_rate_limits_hold_across_hosts(tmp_path: Path) -> None:
    """A client assertion used once is refused on the other host too; a client's rate limit is
    counted over both hosts (within the reconciler's stated bound), not once per host."""
    limit = 20
    with scratch_postgres() as (url,):
        engine = make_engine(url)
        migrate.upgrade(engine)
        env = {**os.environ, "FHIRFUS_DATABASE_URL": socket_url(url), "FHIRFUS_AUTH": "smart",
               "FHIRFUS_EXPORT_DIR": str(tmp_path / "exports"), "FHIRFUS_RATE_LIMIT": str(limit),
               "FHIRFUS_RATE_LIMIT_SYNC_MS": "100"}
        try:
            with hosts_behind_balancer(2, env, tmp_path) as cluster:
                client = make_client(Store(engine), f"{cluster.balancer}/auth/token", role="admin",
                                     scope="system/*.read")
                assertion = client.assertion()
                first = httpx.post(client.token_url, data=client.form(assertion), timeout=30)
                assert first.status_code == 200, first.text
                replays = [httpx.post(client.token_url, data=client.form(assertion), timeout=30) for _ in range(4)]
                assert {r.status_code for r in replays} <= {400, 401}, [r.text for r in replays]
                assert {r.headers["X-Fhirfus-Host"] for r in replays} - {first.headers["X-Fhirfus-Host"]}, \
                    "no replay reached the other host"

                token = first.json()["access_token"]
                answers = []
                for _ in range(3 * limit):  # a new connection each: round robin over both hosts
                    answer = httpx.get(f"{cluster.balancer}/fhir/Patient", headers={"Authorization": f"Bearer {token}"},
                                       timeout=30)
                    answers.append((answer.status_code, answer.headers["X-Fhirfus-Host"]))
                    time.sleep(0.02)
                admitted = [host for status, host in answers if status == 200]
                assert {status for status, _ in answers} <= {200, 429}
                assert len(set(admitted)) == 2  # both hosts served the client
                # one limit for the deployment: per-host counting would admit `limit` on each host
                assert limit <= len(admitted) < 2 * limit, answers
        finally:
            engine.dispose()
