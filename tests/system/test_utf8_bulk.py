"""Non-ASCII text through every bulk write path, read back byte for byte.

The bulk paths write their rows with ``COPY … FROM STDIN`` on PostgreSQL (``fhirfus.db.rows``), a
path of its own beside the single-resource writes: a transaction Bundle, ``fhirfus load`` and
``$import`` each create more resources than ``COPY_FROM`` here, so their rows take it. On a
database of another encoding (LATIN1) the connection still speaks UTF-8: text that encoding can
hold must come back unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import TEST_DEID_KEY, serving
from sqlalchemy import create_engine, text

from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.db.rows import COPY_FROM
from fhirfus.settings import Settings
from fhirfus.settings import test_postgres_url as postgres_server_url
from fhirfus.store.repository import Store
from fhirfus.testing import scratch_postgres
from tests.bulk.test_bulk_import import finish

#: Umlauts, sharp s, CJK, emoji (outside the Basic Multilingual Plane), combining marks, RTL.
UTF8_TEXTS = ("Müller", "Straße", "中文测试", "😀🧠👩‍⚕️", "ü ß 中 😀 mixed", "e\u0301 Å", "مرحبا")
#: What a LATIN1 database can hold.
LATIN1_TEXTS = ("Müller", "Straße", "Zürich À É Î õ ¿¡ ©")
#: More resources per path than the row writer sends by multi-row INSERT: every path takes COPY.
COUNT = COPY_FROM + 6


def _patient(tag: str, n: int, texts: tuple[str, ...]) -> dict:
    name = texts[n % len(texts)]
    return {"resourceType": "Patient", "identifier": [{"system": f"urn:utf8:{tag}", "value": str(n)}],
            "name": [{"family": name, "given": [f"{name} {n}"]}], "address": [{"city": name}]}


def _with_id(tag: str, n: int, texts: tuple[str, ...]) -> dict:
    return {**_patient(tag, n, texts), "id": f"{tag}-{n}"}


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-latin1"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, tuple[str, ...]]]:
    """A migrated database (its URL) and the texts it can hold."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'utf8.db'}"
        migrate.upgrade(engine := make_engine(url))
        engine.dispose()
        yield url, UTF8_TEXTS
    elif request.param == "postgresql":
        with scratch_postgres() as (url,):
            migrate.upgrade(engine := make_engine(url))
            engine.dispose()
            yield url, UTF8_TEXTS
    else:
        admin = create_engine(postgres_server_url(), isolation_level="AUTOCOMMIT")
        name = f"fhirfus_test_latin1_{uuid.uuid4().hex[:12]}"
        try:
            with admin.connect() as conn:
                conn.execute(text(f"CREATE DATABASE \"{name}\" ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
                                  "TEMPLATE template0"))
            url = admin.url.set(database=name).render_as_string(hide_password=False)
            migrate.upgrade(engine := make_engine(url))
            engine.dispose()
            yield url, LATIN1_TEXTS
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def _read_back(http: httpx.Client, written: dict[str, dict]) -> None:
    """Each resource as stored: its JSON bytes hold every text as UTF-8, and parse to what was sent."""
    for res_id, sent in written.items():
        answer = http.get(f"/Patient/{res_id}")
        assert answer.status_code == 200, answer.text
        family = sent["name"][0]["family"]
        assert family.encode() in answer.content, (family, answer.content[:300])
        body = orjson.loads(answer.content)
        assert (body["name"], body["address"], body["identifier"]) == (sent["name"], sent["address"],
                                                                         sent["identifier"])


def test_non_ascii_text_survives_every_bulk_write_path(target: tuple[str, tuple[str, ...]], tmp_path: Path) -> None:
    url, texts = target
    tag = uuid.uuid4().hex[:8]
    engine = make_engine(url)
    settings = Settings(database_url=url, auth="off", deid_key=TEST_DEID_KEY, export_dir=str(tmp_path / "files"))
    try:
        with serving(settings, Store(engine)) as (root, _app), \
                httpx.Client(base_url=root + "/fhir", timeout=120) as http:
            # a transaction Bundle
            sent = [_patient(f"{tag}b", n, texts) for n in range(COUNT)]
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": body, "request": {"method": "POST", "url": "Patient"}}
                for body in sent]}
            answer = http.post("", json=bundle)
            assert answer.status_code == 200, answer.text[:2000]
            ids = [entry["response"]["location"].split("/")[1] for entry in answer.json()["entry"]]
            _read_back(http, dict(zip(ids, sent, strict=True)))

            # fhirfus load
            loaded = [_with_id(f"{tag}l", n, texts) for n in range(COUNT)]
            file = tmp_path / "Patient.ndjson"
            file.write_bytes(b"\n".join(orjson.dumps(body) for body in loaded))
            done = subprocess.run([sys.executable, "-m", "fhirfus.cli", "load", str(file)], capture_output=True,
                                  text=True, timeout=300, env={**os.environ, "FHIRFUS_DATABASE_URL": url})
            assert done.returncode == 0, done.stderr
            _read_back(http, {body["id"]: body for body in loaded})

            # $import of an uploaded NDJSON file
            imported = [_with_id(f"{tag}i", n, texts) for n in range(COUNT)]
            kick = http.post("/$import", headers={"Prefer": "respond-async", "Content-Type": "application/fhir+ndjson"},
                             content=b"\n".join(orjson.dumps(body) for body in imported))
            assert kick.status_code == 202, kick.text
            manifest = finish(http, kick.headers["Content-Location"], timeout=300)
            assert sum(output["count"] for output in manifest["output"]) == COUNT, manifest
            _read_back(http, {body["id"]: body for body in imported})
    finally:
        engine.dispose()
