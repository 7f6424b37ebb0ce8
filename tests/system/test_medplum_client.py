"""A real client: Medplum's JS client (``@medplum/core``) uploads an attachment and reads it back.

``tests/clients/medplum/binary.mjs`` runs ``createBinary`` (native upload with
``X-Security-Context``), ``readResource`` (the Binary as FHIR JSON) and ``download`` (the bytes)
against the test server on each database; this test judges what it printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from auth_helpers import make_client

from fhirfus.store.repository import Store

PROJECT = Path(__file__).resolve().parents[1] / "clients" / "medplum"


def run_medplum(root: str, token: str | None = None) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: Medplum's JS client cannot run")
    if not (PROJECT / "node_modules" / "@medplum" / "core").is_dir():
        pytest.skip(f"@medplum/core is not installed: npm ci --prefix {PROJECT} (.ci/run does it)")
    env = {**os.environ, **({"FHIRFUS_TOKEN": token} if token else {})}
    done = subprocess.run([node, "binary.mjs", root + "/"], cwd=PROJECT, capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_medplum_uploads_an_attachment_and_reads_it_back(server, client) -> None:
    result = run_medplum(server.base.removesuffix("/fhir"))
    context = {"reference": f"Patient/{result['patient']}"}
    assert result["created"] == {"resourceType": "Binary", "contentType": "application/pdf", "securityContext": context}
    assert result["read"] == {"contentType": "application/pdf", "securityContext": context, "dataLength": 2732}
    assert result["download"] == {"type": "application/pdf", "size": 2048, "same": True}
    assert result["text"] == "TWSTRS notes: ütf-8"
    stored = client.get(f"/Binary/{result['id']}", params={"_format": "json"}).json()
    assert stored["securityContext"] == context


def test_medplum_with_a_site_token_keeps_the_attachment_in_its_site(secure_server) -> None:
    store = Store(secure_server.database.engine)
    token_url = secure_server.root + "/auth/token"
    suffix = uuid.uuid4().hex[:8]
    site_a = make_client(store, token_url, role="site", site=f"A{suffix}", scope="system/*.cruds")
    site_b = make_client(store, token_url, role="site", site=f"B{suffix}", scope="system/*.cruds")
    result = run_medplum(secure_server.root, site_a.token())
    assert result["download"] == {"type": "application/pdf", "size": 2048, "same": True}
    with site_a.http(secure_server.base) as a, site_b.http(secure_server.base) as b:
        stored = a.get(f"/Binary/{result['id']}", params={"_format": "json"}).json()
        assert {"system": "https://fhirfus.org/fhir/CodeSystem/site", "code": f"A{suffix}"} in stored["meta"]["security"]
        assert b.get(f"/Binary/{result['id']}").status_code == 404
