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
