"""The client lifecycle: the ``fhirfus clients`` commands, disabling and removing clients with live
tokens, key rotation (stored JWKS and ``jwks_url``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from auth_helpers import TestClient, make_client, new_key, public_jwk
from conftest import serving
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from fhirfus.auth import clients
from fhirfus.auth.client_status import ClientStatus
from fhirfus.auth.jwks import InvalidJwks
from fhirfus.auth.jwks_remote import (
    MAX_BYTES,
    JwksUnavailable,
    RemoteKeySets,
    check_jwks_url,
    fetch_jwks,
)
from fhirfus.cli import app as cli_app
from fhirfus.settings import Settings, get_settings
from fhirfus.store.repository import Store


class Clock:
    def __init__(self, start: float) -> None:
        self.time = start

    def __call__(self) -> float:
        return self.time


@pytest.fixture
def store(database) -> Store:
    return Store(database.engine)


# --- fhirfus clients … ---------------------------------------------------------------------------------


@pytest.fixture
def cli(fresh_database, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """``fhirfus`` on a database of the test's own (migrated by the commands themselves)."""
    monkeypatch.setenv("FHIRFUS_DATABASE_URL", fresh_database.url)
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args, input=None: runner.invoke(cli_app, list(args), input=input)
    get_settings.cache_clear()


def _jwks_file(directory: Path, kid: str, algorithm: str = "RS384", **extra: object) -> Path:
    path = directory / f"{kid}.jwks.json"
    path.write_bytes(orjson.dumps({"keys": [{**public_jwk(new_key(algorithm), kid, algorithm), **extra}]}))
    return path


def _listed(cli) -> list[dict]:
    result = cli("clients", "list", "--json")
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def test_clients_commands_manage_the_lifecycle(cli, tmp_path: Path) -> None:
    added = cli("clients", "add", "--name", "Site A registry", "--role", "site", "--site", "A",
                "--scope", "system/*.cruds", "--jwks", str(_jwks_file(tmp_path, "k1")))
    assert added.exit_code == 0, added.output
    site_a = added.stdout.strip()
    by_url = cli("clients", "add", "--name", "Analytics", "--role", "analyst", "--scope", "system/*.rs",
                 "--jwks-url", "https://keys.example/jwks.json")
    assert by_url.exit_code == 0, by_url.output
    analytics = by_url.stdout.strip()

    listed = {c["client_id"]: c for c in _listed(cli)}
    assert listed[site_a]["name"] == "Site A registry" and listed[site_a]["site"] == "A"
    assert listed[site_a]["keys"] == [{"kid": "k1", "kty": "RSA", "alg": "RS384"}] and listed[site_a]["enabled"]
    assert listed[analytics]["jwks_url"] == "https://keys.example/jwks.json" and listed[analytics]["keys"] == []
    table = cli("clients", "list")
    assert table.exit_code == 0 and "2 clients" in table.stdout
    assert site_a in table.stdout and analytics in table.stdout  # whole, even 80 columns wide
    shown = cli("clients", "show", site_a)
    assert shown.exit_code == 0 and "Site A registry" in shown.stdout and "kid k1" in shown.stdout

    assert cli("clients", "disable", site_a).exit_code == 0
    disabled = {c["client_id"]: c for c in _listed(cli)}[site_a]
    assert not disabled["enabled"] and disabled["disabled_at"]
    assert cli("clients", "enable", site_a).exit_code == 0
    assert {c["client_id"]: c for c in _listed(cli)}[site_a]["enabled"]

    rotated = cli("clients", "keys", site_a, "--jwks", str(_jwks_file(tmp_path, "k2", "ES384")))
    assert rotated.exit_code == 0, rotated.output
    assert {c["client_id"]: c for c in _listed(cli)}[site_a]["keys"] == [{"kid": "k2", "kty": "EC", "alg": "ES384"}]
    moved = cli("clients", "keys", site_a, "--jwks-url", "https://a.example/.well-known/jwks.json")
    assert moved.exit_code == 0, moved.output
    assert {c["client_id"]: c for c in _listed(cli)}[site_a]["jwks_url"] == "https://a.example/.well-known/jwks.json"

    kept = cli("clients", "remove", site_a, input="n\n")
    assert kept.exit_code == 1 and site_a in {c["client_id"] for c in _listed(cli)}
    assert cli("clients", "remove", site_a, "--yes").exit_code == 0
    assert [c["client_id"] for c in _listed(cli)] == [analytics]


def test_clients_commands_refuse_what_cannot_work(cli, tmp_path: Path) -> None:
    common = ("clients", "add", "--name", "x", "--role", "admin", "--scope", "system/*.rs")
    jwks = str(_jwks_file(tmp_path, "k1"))
    both = cli(*common, "--jwks", jwks, "--jwks-url", "https://keys.example/jwks.json")
    assert both.exit_code == 2 and "either" in both.output
    assert cli(*common).exit_code == 2
    private = tmp_path / "private.json"
    key = new_key()
    private.write_bytes(orjson.dumps({"keys": [orjson.loads(__import__("jwt").algorithms.RSAAlgorithm.to_jwk(key))]}))
    refused = cli(*common, "--jwks", str(private))
    assert refused.exit_code == 2 and "private" in refused.output
    weak = cli(*common, "--jwks", str(_jwks_file(tmp_path, "k3", "RS384", alg="RS256")))
    assert weak.exit_code == 2 and "RS256" in weak.output
    plain_http = cli(*common, "--jwks-url", "http://keys.example/jwks.json")
    assert plain_http.exit_code == 2 and "https" in plain_http.output
    for command in (("show",), ("disable",), ("enable",), ("remove", "--yes"), ("keys", "--jwks", jwks)):
        unknown = cli("clients", command[0], "no-such-client", *command[1:])
        assert unknown.exit_code == 1 and "no client 'no-such-client'" in unknown.output
    assert _listed(cli) == []


# --- disabled and removed clients ---------------------------------------------------------------------


def test_client_status_snapshot(store) -> None:
    clock = Clock(1_000_000.0)
    status = ClientStatus(store, interval=5, now=clock)
    client = clients.register(store, "status", "admin", "system/*.rs", {"keys": [public_jwk(new_key(), "k", "RS384")]})
    assert not status.allows(client.client_id, int(clock.time))  # no snapshot yet: nothing is trusted
    status.refresh()
    assert status.allows(client.client_id, 0)
    clients.set_enabled(store, client.client_id, False)
    assert status.allows(client.client_id, 0)  # until the next re-check
    clock.time += 5
    status.refresh()
    assert not status.allows(client.client_id, int(clock.time))
    clients.set_enabled(store, client.client_id, True)
    status.refresh()
    assert status.allows(client.client_id, 0)
    clients.remove(store, client.client_id)
    status.refresh()
    assert not status.allows(client.client_id, int(clock.time))  # gone although its token is young
    newer = clients.register(store, "newer", "admin", "system/*.rs", {"keys": [public_jwk(new_key(), "k", "RS384")]})
    assert status.allows(newer.client_id, int(clock.time) + 1)  # registered after the snapshot
    assert not status.allows(newer.client_id, int(clock.time) - 10)  # a token older than the snapshot: forged


class _FirstReadFails:
    """A store whose first read fails (as a cancelled query does), the later ones succeed."""

    def __init__(self, store: Store) -> None:
        self.store, self.failed = store, False

    @contextmanager
    def reading(self) -> Iterator[Any]:
        if not self.failed:
            self.failed = True
            raise OperationalError("SELECT", {}, Exception("canceling statement due to statement timeout"))
        with self.store.reading() as conn:
            yield conn


def test_a_failed_first_snapshot_does_not_stop_the_start_and_is_read_again_soon(store) -> None:
    client = clients.register(store, "late", "admin", "system/*.rs", {"keys": [public_jwk(new_key(), "k", "RS384")]})
    status = ClientStatus(_FirstReadFails(store), interval=60)  # type: ignore[arg-type]
    status.start()
    try:
        assert not status.allows(client.client_id, 0)  # no snapshot: nothing is trusted
        deadline = time.monotonic() + 5
        while not status.allows(client.client_id, 0):  # read again within about a second, not ``interval``
            assert time.monotonic() < deadline, "the snapshot was not read again"
            time.sleep(0.05)
    finally:
        status.stop()


def _until_refused(http: httpx.Client, limit: float) -> float:
    """Seconds until the client's live token is refused (fails after ``limit``)."""
    start = time.monotonic()
    while http.get("/Patient", params={"_count": 1}).status_code == 200:
        assert time.monotonic() - start < limit, "the live token kept working"
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.mark.parametrize("how", ["disabled", "removed"])
def test_live_token_stops_working_within_the_recheck_interval(database, store, how: str) -> None:
    settings = Settings(database_url=database.url, auth="smart", token_secret="s" * 32, client_recheck_ms=200)
    with serving(settings, store) as (root, _):
        client = make_client(store, root + "/auth/token", role="admin", scope="system/*.rs")
        with client.http(root + "/fhir") as http:
            assert http.get("/Patient", params={"_count": 1}).status_code == 200
            if how == "disabled":
                clients.set_enabled(store, client.client_id, False)
            else:
                clients.remove(store, client.client_id)
            refused_for = client.token_request()  # token requests are refused at once
            assert refused_for.status_code == 401
            assert refused_for.json()["error_description"] == (
                "client is disabled" if how == "disabled" else f"unknown client '{client.client_id}'")
            _until_refused(http, limit=0.2 + 1.0)  # the interval, plus a query and thread scheduling
            answer = http.get("/Patient")
            assert answer.status_code == 401 and "disabled or removed" in answer.text
            if how == "disabled":
                clients.set_enabled(store, client.client_id, True)
                deadline = time.monotonic() + 1.2
                while http.get("/Patient", params={"_count": 1}).status_code != 200:
                    assert time.monotonic() < deadline, "the re-enabled client's token stayed refused"
                    time.sleep(0.01)


# --- key rotation -------------------------------------------------------------------------------------------


def test_replacing_the_stored_keys_refuses_the_old_key(secure_server, store) -> None:
    token_url = secure_server.root + "/auth/token"
    old = make_client(store, token_url, role="admin", scope="system/*.rs")
    assert old.token_request().status_code == 200
    new = TestClient(old.client_id, new_key("ES384"), "ES384", "rotated", token_url, old.scope)
    clients.set_keys(store, old.client_id, {"keys": [public_jwk(new.key, "rotated", "ES384")]})
    refused = old.token_request()
    assert refused.status_code == 401
    assert refused.json()["error_description"] == f"kid '{old.kid}' names no key of this client"
    assert new.token_request().status_code == 200


class JwksHost:
    """A small HTTP server on 127.0.0.1 publishing a JWKS the test changes."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b'{"keys": []}'
        self.headers: dict[str, str] = {}
        self.fetches = 0
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.fetches += 1
                self.send_response(host.status)
                for name, value in host.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(host.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, *jwks: dict) -> None:
        self.body = orjson.dumps({"keys": list(jwks)})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_host() -> Iterator[JwksHost]:
    host = JwksHost()
    yield host
    host.close()


def test_keys_published_at_a_jwks_url_rotate(secure_server, store, jwks_host: JwksHost) -> None:
    token_url = secure_server.root + "/auth/token"
    first_key, second_key = new_key("RS384"), new_key("ES384")
    jwks_host.publish(public_jwk(first_key, "2025", "RS384"), {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"})
    registered = clients.register(store, "by url", "admin", "system/*.rs", jwks_url=jwks_host.url)
    first = TestClient(registered.client_id, first_key, "RS384", "2025", token_url, "system/*.rs")
    second = TestClient(registered.client_id, second_key, "ES384", "2026", token_url, "system/*.rs")
    assert first.token_request().status_code == 200
    assert first.token_request().status_code == 200 and jwks_host.fetches == 1  # cached
    unusable = first.token_request(first.signed(kid="hmac"))
    assert unusable.status_code == 401 and "kid 'hmac' names a key fhirfus cannot use" in unusable.text
    jwks_host.publish(public_jwk(second_key, "2026", "ES384"))  # the client rotates
    assert second.token_request().status_code == 200  # an unknown kid: fetched again once
    assert jwks_host.fetches == 2
    refused = first.token_request()  # the cached set no longer has it, and no second early fetch
    assert refused.status_code == 401 and refused.json()["error_description"] == "kid '2025' names no key of this client"
    assert jwks_host.fetches == 2


def test_remote_key_sets_are_cached_and_refetched_sparingly(jwks_host: JwksHost) -> None:
    clock = Clock(100.0)
    remote = RemoteKeySets(now=clock)
    jwks_host.publish(public_jwk(new_key(), "a", "RS384"))
    assert [k.kid for k in remote.keys(jwks_host.url).keys] == ["a"]
    clock.time += 299
    remote.keys(jwks_host.url)
    assert jwks_host.fetches == 1
    jwks_host.publish(public_jwk(new_key(), "b", "RS384"))
    assert [k.kid for k in remote.refetched(jwks_host.url).keys] == ["b"]  # type: ignore[union-attr]
    clock.time += 9
    assert remote.refetched(jwks_host.url) is None and jwks_host.fetches == 2
    clock.time += 300
    remote.keys(jwks_host.url)
    assert jwks_host.fetches == 3
    jwks_host.status = 500
    clock.time += 300
    with pytest.raises(JwksUnavailable, match="answered HTTP 500"):
        remote.keys(jwks_host.url)
    with pytest.raises(JwksUnavailable, match="answered HTTP 500"):
        remote.keys(jwks_host.url)  # a failure is remembered, not retried on every request
    assert jwks_host.fetches == 4


def test_fetching_a_jwks_is_bounded(jwks_host: JwksHost) -> None:
    jwks_host.body = b'{"keys": [' + b" " * MAX_BYTES + b"]}"
    with pytest.raises(JwksUnavailable, match="more than"):
        fetch_jwks(jwks_host.url)
    jwks_host.body = b"<html>"
    with pytest.raises(JwksUnavailable, match="did not send a JWKS"):
        fetch_jwks(jwks_host.url)
    jwks_host.body, jwks_host.status, jwks_host.headers = b"{}", 302, {"Location": "https://elsewhere.example/"}
    with pytest.raises(JwksUnavailable, match="answered HTTP 302"):
        fetch_jwks(jwks_host.url)
    with pytest.raises(InvalidJwks, match="https"):
        check_jwks_url("http://keys.example/jwks.json")
    assert check_jwks_url("https://keys.example/jwks.json")
