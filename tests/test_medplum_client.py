"""A real client: Medplum's JS client (``@medplum/core``) uploads an attachment and reads it back.

``tests/clients/medplum/binary.mjs`` runs ``createBinary`` (native upload with
``X-Security-Context``), ``readResource`` (the Binary as FHIR JSON) and ``download`` (the bytes)
against the test server on each database; this test judges what it printed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).parent / "clients" / "medplum"


def run_medplum(root: str) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: Medplum's JS client cannot run")
    if not (PROJECT / "node_modules" / "@medplum" / "core").is_dir():
        pytest.skip(f"@medplum/core is not installed: npm ci --prefix {PROJECT} (.ci/run does it)")
    done = subprocess.run([node, "binary.mjs", root + "/"], cwd=PROJECT, capture_output=True, text=True, timeout=120)
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
