"""Shared by the ViewDefinition tests: two sites of imported synthetic patients, a cohort, and
one client of every role (``make_world``); the guide's views as published (``guide``)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from auth_helpers import TestClient, make_client

from fhirfus.domain.synthetic_cohort import cohort_rows, write_site_file
from fhirfus.ig import folder
from fhirfus.ingest.site_import import import_files
from fhirfus.store.repository import Store

#: A pseudonym of the safe-harbor policies.
PSEUDONYM = re.compile(r"^FUS-[2-9A-HJ-NP-Z]{10}$")


def guide(name: str) -> dict:
    return next(v for p in sorted(folder("views").glob("*.json"))
                if (v := json.loads(p.read_text()))["name"] == name)


def make_world(secure_server, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two sites with three imported synthetic patients each, a cohort Group of site A's, and an
    admin, a client of each site and an analyst."""
    store = Store(secure_server.database.engine)
    token_url = secure_server.root + "/auth/token"
    suffix = uuid.uuid4().hex[:8].upper()
    sites = {"a": f"PA{suffix}", "b": f"PB{suffix}"}
    directory: Path = tmp_path_factory.mktemp("views")
    for seed, site in enumerate(sites.values(), start=11):
        report = import_files(store, "site-registry", site, [write_site_file(directory / f"{site}.csv",
                                                                          cohort_rows(3, seed=seed))])
        assert report.ok, report.errors[:3]
    clients: dict[str, TestClient] = {
        "admin": make_client(store, token_url, role="admin", scope="system/*.cruds"),
        "a": make_client(store, token_url, role="site", site=sites["a"], scope="system/*.cruds"),
        "b": make_client(store, token_url, role="site", site=sites["b"], scope="system/*.cruds"),
        "analyst": make_client(store, token_url, role="analyst", scope="system/*.rs"),
        "other": make_client(store, token_url, role="analyst", scope="system/*.rs"),
    }
    with clients["a"].http(secure_server.base) as on_a:
        found = on_a.get("/Patient", params={"_count": 100}).json()
        members = [{"entity": {"reference": f"Patient/{e['resource']['id']}"}} for e in found["entry"]]
        group = on_a.post("/Group", json={"resourceType": "Group", "type": "person", "actual": True,
                                          "member": members})
        assert group.status_code == 201, group.text
    return {"sites": sites, "clients": clients, "group": group.json()["id"], "store": store,
            "ids_a": sorted(m["entity"]["reference"].split("/")[1] for m in members)}
