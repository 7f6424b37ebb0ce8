"""``fhirfus pull`` against Bulk Data servers that are not fhirfus: the manifests, status URLs and
file URLs of HAPI FHIR and Medplum, served by a small local HTTP server that checks the client.

HAPI: status at ``$export-poll-status?_jobId=``, files as ``Binary`` URLs, ``requiresAccessToken:
true``. Medplum: status at ``bulkdata/export/{id}``, ``requiresAccessToken: false`` but the file
URLs still want the token (401 without it). Both get a signed assertion checked against the
client's public key, ``Retry-After`` while running, gzip when asked and ``Range`` requests.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from fhirfus.db.tables import resources
from fhirfus.pull import definitions
from fhirfus.pull.client import PullError
from fhirfus.pull.run import pull_once
from fhirfus.store.repository import Store
from tests.auth_helpers import new_key
from tests.conftest import Database

TOKEN = "source-token-" + uuid.uuid4().hex


@dataclass
class Source:
    """A fake Bulk Data server in the style of ``flavour`` (``hapi`` or ``medplum``)."""

    flavour: str
    public_key: object
    files: dict[str, bytes]                        # path → NDJSON
    polls_before_done: int = 1
    retry_after: str = "2"
    base: str = ""
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)   # method, path, headers
    polls: int = 0
    extra: dict = field(default_factory=dict)      # manifest members to add or replace
    assertion_headers: list[dict] = field(default_factory=list)
    raw_manifest: bytes | None = None             # answered instead of the manifest (a broken source)

    @property
    def status_path(self) -> str:
        return "/fhir/$export-poll-status?_jobId=job1" if self.flavour == "hapi" else "/fhir/R4/bulkdata/export/job1"

    def manifest(self) -> dict:
        requires = self.flavour == "hapi"
        return {"transactionTime": "2026-12-01T10:00:00.000+00:00", "request": f"{self.base}/fhir/$export",
                "requiresAccessToken": requires,
                "output": [{"type": path.split("/")[-1].split("-")[0], "url": f"{self.base}{path}"}
                           for path in self.files if not path.startswith("/deleted/")],
                "error": [], **self.extra}


def _handler(source: Source) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {TOKEN}"

        def do_POST(self) -> None:
            source.seen.append(("POST", self.path, dict(self.headers)))
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            assertion = form["client_assertion"][0]
            source.assertion_headers.append(jwt.get_unverified_header(assertion))
            claims = jwt.decode(assertion, source.public_key,  # type: ignore[arg-type]
                                algorithms=["RS384", "ES384"], audience=f"{source.base}/token")
            assert claims["iss"] == claims["sub"] == "hub-at-source"
            self._send(200, orjson.dumps({"access_token": TOKEN, "token_type": "bearer", "expires_in": 300}),
                       {"Content-Type": "application/json"})

        def do_GET(self) -> None:
            source.seen.append(("GET", self.path, dict(self.headers)))
            path = urlsplit(self.path).path
            if path == "/fhir/.well-known/smart-configuration":
                self._send(200, orjson.dumps({"token_endpoint": f"{source.base}/token"}))
            elif not self._authorized():
                self._send(401, b'{"error": "unauthorized"}')
            elif path == "/fhir/$export":
                assert self.headers.get("Prefer") == "respond-async"
                self._send(202, b"", {"Content-Location": f"{source.base}{source.status_path}"})
            elif self.path == source.status_path:
                source.polls += 1
                if source.polls <= source.polls_before_done:
                    self._send(202, b"", {"Retry-After": source.retry_after, "X-Progress": "busy"})
                else:
                    body = source.raw_manifest if source.raw_manifest is not None else orjson.dumps(source.manifest())
                    self._send(200, body, {"Content-Type": "application/json"})
            elif path in source.files:
                self._file(source.files[path])
            else:
                self._send(404)

        def _file(self, content: bytes) -> None:
            ranged = self.headers.get("Range")
            if ranged:
                start = int(ranged.removeprefix("bytes=").split("-")[0])
                self._send(206, content[start:], {"Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}",
                                                  "Content-Type": "application/fhir+ndjson"})
            elif "gzip" in self.headers.get("Accept-Encoding", ""):
                self._send(200, gzip.compress(content), {"Content-Encoding": "gzip",
                                                         "Content-Type": "application/fhir+ndjson"})
            else:
                self._send(200, content, {"Content-Type": "application/fhir+ndjson"})

    return Handler


@pytest.fixture
def serve() -> Iterator[object]:
    servers: list[ThreadingHTTPServer] = []

    def start(source: Source) -> Source:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(source))
        source.base = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return source

    yield start
    for server in servers:
        server.shutdown()


def _ndjson(items: list[dict]) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


def _files(label: str) -> dict[str, bytes]:
    patients = [{"resourceType": "Patient", "id": f"p{n}", "name": [{"family": label}]} for n in range(3)]
    observations = [{"resourceType": "Observation", "id": f"o{n}", "status": "final", "code": {"text": "TWSTRS"},
                     "subject": {"reference": f"Patient/p{n % 3}"}} for n in range(40)]
    return {"/fhir/Binary/Patient-1": _ndjson(patients), "/fhir/Binary/Observation-1": _ndjson(observations)}


def _key_file(tmp_path: Path, algorithm: str = "RS384") -> tuple[object, Path]:
    """An RS384 key as PEM, or an ES384 key as a private JWK with its kid (both forms ``--key`` reads)."""
    key = new_key(algorithm)
    if algorithm == "ES384":
        path = tmp_path / "key.jwk.json"
        jwk = orjson.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
        path.write_bytes(orjson.dumps({"keys": [{**jwk, "alg": "ES384", "kid": "hub-2026"}]}))
        return key, path
    path = tmp_path / "key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                                       serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return key, path


def _held(database: Database, label: str) -> set[str]:
    with database.engine.connect() as conn:
        return {f"{r.res_type}/{r.res_id}" for r in conn.execute(select(resources.c.res_type, resources.c.res_id).where(
            resources.c.site == label, resources.c.deleted.is_(False), resources.c.res_type != "Provenance"))}


@pytest.mark.parametrize("flavour", ["hapi", "medplum"])
def test_the_hub_pulls_from_hapi_and_medplum_style_servers(
    serve, database: Database, tmp_path: Path, unique: str, flavour: str,  # type: ignore[no-untyped-def]
) -> None:
    key, key_path = _key_file(tmp_path, "RS384" if flavour == "hapi" else "ES384")
    source = serve(Source(flavour, key.public_key(), _files(unique)))  # type: ignore[attr-defined]
    store = Store(database.engine)
    label = f"{flavour[0]}{unique}"
    definition = definitions.save(store, definitions.Definition(
        f"pull-{label}", f"{source.base}/fhir", "hub-at-source", str(key_path), label), datetime.now(UTC))
    waits: list[float] = []

    report = pull_once(store, definition, tmp_path / "work", lambda: datetime.now(UTC), sleep=waits.append)

    assert report.written == 43
    assert _held(database, label) == {f"Patient/{label}-p{n}" for n in range(3)} | \
        {f"Observation/{label}-o{n}" for n in range(40)}
    assert waits == [2.0]  # the server's Retry-After
    downloads = [(path, headers) for method, path, headers in source.seen if path.startswith("/fhir/Binary/")]
    without_token = [path for path, headers in downloads if "Authorization" not in headers]
    if flavour == "hapi":  # requiresAccessToken: true
        assert without_token == []
    else:  # not announced by the manifest: the first file is asked without the token, then all with it
        assert len(without_token) == 1 and len(downloads) == 3
    expected = {f"{source.base}{path}": hashlib.sha256(content).hexdigest() for path, content in source.files.items()}
    assert {f["url"]: f["sha256"] for f in report.files} == expected
    assert definitions.get(store, f"pull-{label}").since == "2026-12-01T10:00:00.000+00:00"
    header = source.assertion_headers[0]
    assert (header["alg"], header.get("kid")) == (("RS384", None) if flavour == "hapi" else ("ES384", "hub-2026"))


def test_a_long_retry_after_is_capped(serve, database: Database, tmp_path: Path, unique: str) -> None:  # type: ignore[no-untyped-def]
    key, key_path = _key_file(tmp_path)
    source = serve(Source("hapi", key.public_key(), _files(unique), polls_before_done=2, retry_after="86400"))  # type: ignore[attr-defined]
    store = Store(database.engine)
    definition = definitions.save(store, definitions.Definition(
        f"pull-c{unique}", f"{source.base}/fhir", "hub-at-source", str(key_path), f"c{unique}"), datetime.now(UTC))
    waits: list[float] = []
    pull_once(store, definition, tmp_path / "work", lambda: datetime.now(UTC), sleep=waits.append)
    assert waits == [60.0, 60.0]


def test_an_interrupted_download_resumes_with_a_range_request(
    serve, database: Database, tmp_path: Path, unique: str,  # type: ignore[no-untyped-def]
) -> None:
    key, key_path = _key_file(tmp_path)
    files = _files(unique)
    source = serve(Source("hapi", key.public_key(), files, polls_before_done=0))  # type: ignore[attr-defined]
    store = Store(database.engine)
    label = f"r{unique}"
    name = f"pull-{label}"
    definitions.save(store, definitions.Definition(
        name, f"{source.base}/fhir", "hub-at-source", str(key_path), label), datetime.now(UTC))
    status_url = f"{source.base}{source.status_path}"
    definitions.in_flight(store, name, status_url)  # an earlier run got this far, and half a file
    folder = tmp_path / "work" / name / hashlib.sha256(status_url.encode()).hexdigest()[:16]
    folder.mkdir(parents=True)
    patients = files["/fhir/Binary/Patient-1"]
    (folder / "output-00000.ndjson.part").write_bytes(patients[:50])

    report = pull_once(store, definitions.get(store, name), tmp_path / "work", lambda: datetime.now(UTC))

    assert report.resumed_export
    [resumed] = [f for f in report.files if f["type"] == "Patient"]
    assert resumed["resumed_from"] == 50 and resumed["sha256"] == hashlib.sha256(patients).hexdigest()
    assert any(headers.get("Range") == "bytes=50-" for _, _, headers in source.seen)
    assert {r for r in _held(database, label) if r.startswith("Patient/")} == {f"Patient/{label}-p{n}" for n in range(3)}
    assert not any(path == "/fhir/$export" for _, path, _ in source.seen)  # no second export


def test_deletions_listed_by_a_source_reach_the_hub_and_a_malformed_manifest_is_refused(
    serve, database: Database, tmp_path: Path, unique: str,  # type: ignore[no-untyped-def]
) -> None:
    key, key_path = _key_file(tmp_path)
    source = serve(Source("generic", key.public_key(), _files(unique), polls_before_done=0))  # type: ignore[attr-defined]
    store = Store(database.engine)
    label = f"d{unique}"
    name = f"pull-{label}"
    definitions.save(store, definitions.Definition(
        name, f"{source.base}/fhir", "hub-at-source", str(key_path), label), datetime.now(UTC))
    pull_once(store, definitions.get(store, name), tmp_path / "work", lambda: datetime.now(UTC))
    assert f"Patient/{label}-p1" in _held(database, label)

    source.files = {"/deleted/1": _ndjson([{"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": "Patient/p1"}},
        {"request": {"method": "DELETE", "url": "Observation/never-pulled"}}]}])}
    source.extra = {"deleted": [{"type": "Bundle", "url": f"{source.base}/deleted/1"}]}
    report = pull_once(store, definitions.get(store, name), tmp_path / "work", lambda: datetime.now(UTC))
    assert report.deleted == 2 and f"Patient/{label}-p1" not in _held(database, label)
    assert f"Patient/{label}-p0" in _held(database, label)
    kick_offs = [path for method, path, _ in source.seen if urlsplit(path).path == "/fhir/$export"]
    assert "_since=2026-12-01T10%3A00%3A00.000%2B00%3A00" in kick_offs[-1]  # incremental: the last transactionTime

    source.extra = {"output": "not a list"}
    with pytest.raises(PullError, match="output"):
        pull_once(store, definitions.get(store, name), tmp_path / "work", lambda: datetime.now(UTC))
    stored = definitions.get(store, name)
    assert stored.status == "failed" and stored.since == "2026-12-01T10:00:00.000+00:00"  # the watermark stays


@pytest.mark.parametrize("answer", [b"<html>maintenance</html>", b"[]", b'{"output": []}'])
def test_a_status_answer_that_is_no_manifest_fails_the_pull_and_says_why(
    serve, database: Database, tmp_path: Path, unique: str, answer: bytes,  # type: ignore[no-untyped-def]
) -> None:
    key, key_path = _key_file(tmp_path)
    source = serve(Source("hapi", key.public_key(), _files(unique), polls_before_done=0, raw_manifest=answer))  # type: ignore[attr-defined]
    store = Store(database.engine)
    name = f"pull-m{unique}"
    definitions.save(store, definitions.Definition(
        name, f"{source.base}/fhir", "hub-at-source", str(key_path), f"m{unique}"), datetime.now(UTC))
    with pytest.raises(PullError, match=r"JSON object|transactionTime"):
        pull_once(store, definitions.get(store, name), tmp_path / "work", lambda: datetime.now(UTC))
    stored = definitions.get(store, name)
    assert stored.status == "failed" and stored.since is None and _held(database, f"m{unique}") == set()


@pytest.mark.parametrize("transaction_time", ["2026-12-01T10:00:00." + "1" * 44 + "Z", "yesterday", "2026-12-01"])
def test_a_transaction_time_that_is_no_instant_fitting_the_watermark_fails_the_pull_before_it_loads(
    serve, database: Database, tmp_path: Path, unique: str, transaction_time: str,  # type: ignore[no-untyped-def]
) -> None:
    """The watermark (``pull_definitions.since``, 64 characters) is the next pull's ``_since``: a source
    answering anything else fails the pull naming it, with nothing loaded (a 65-character instant was
    a database error on PostgreSQL after the whole load)."""
    key, key_path = _key_file(tmp_path)
    source = serve(Source("hapi", key.public_key(), _files(unique), polls_before_done=0,  # type: ignore[attr-defined]
                          extra={"transactionTime": transaction_time}))
    store = Store(database.engine)
    label = f"t{unique}"
    definitions.save(store, definitions.Definition(
        f"pull-{label}", f"{source.base}/fhir", "hub-at-source", str(key_path), label), datetime.now(UTC))
    with pytest.raises(PullError) as failed:
        pull_once(store, definitions.get(store, f"pull-{label}"), tmp_path / "work", lambda: datetime.now(UTC))
    cause = failed.value.__cause__
    assert isinstance(cause, PullError) and cause.issues[0].expression == ("manifest.transactionTime",)
    stored = definitions.get(store, f"pull-{label}")
    assert stored.status == "failed" and stored.since is None and _held(database, label) == set()
