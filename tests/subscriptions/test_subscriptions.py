"""Subscriptions that fire: R4 rest-hook notifications from a durable queue, on both databases.

A fhirfus server with authentication on (its own database, so no other test's server delivers
from its queue) and receivers that are real HTTP servers on loopback ports. Delivery is at least
once and in order per Subscription; a site client's Subscription sees its site only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from auth_helpers import make_client
from conftest import BACKENDS, TEST_DEID_KEY, database_url_for, serving

from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.settings import Settings
from fhirfus.store import repository
from fhirfus.store.repository import Store
from fhirfus.subscriptions import queue
from fhirfus.testing import Receiver

SITE = "https://fhirfus.org/fhir/CodeSystem/site"
KEY = "test-subscription-key-0123456789"
ATTEMPTS = 4


@dataclass
class Deployment:
    base: str
    store: Store
    admin: httpx.Client
    site_a: httpx.Client
    site_b: httpx.Client
    sites: tuple[str, str]


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    urls = database_url_for(request.param, tmp_path_factory)
    url = next(urls)
    engine = make_engine(url)
    migrate.upgrade(engine)
    settings = Settings(database_url=url, auth="smart", token_secret="test-secret-" + uuid.uuid4().hex,
                        deid_key=TEST_DEID_KEY, rate_limit_per_minute=100_000, token_rate_limit_per_minute=100_000,
                        token_rate_limit_per_address=100_000, subscription_key=KEY,
                        subscription_attempts=ATTEMPTS, subscription_retry_ms=100, subscription_poll_ms=50,
                        subscription_timeout_ms=2000)
    store = Store(engine)
    suffix = uuid.uuid4().hex[:8]
    sites = (f"A{suffix}", f"B{suffix}")
    try:
        with serving(settings, store) as (root, _app):
            token_url = root + "/auth/token"
            clients = [make_client(Store(engine), token_url, role="admin", scope="system/*.cruds"),
                       *(make_client(Store(engine), token_url, role="site", site=site, scope="system/*.cruds")
                         for site in sites)]
            sessions = [client.http(root + "/fhir") for client in clients]
            try:
                yield Deployment(root + "/fhir", Store(engine), *sessions, sites)  # type: ignore[arg-type]
            finally:
                for session in sessions:
                    session.close()
    finally:
        engine.dispose()
        next(urls, None)


def subscribe(http: httpx.Client, criteria: str, endpoint: str, *, payload: str | None = None,
              content: str | None = None, headers: tuple[str, ...] = ()) -> dict:
    channel: dict = {"type": "rest-hook", "endpoint": endpoint, **({"header": list(headers)} if headers else {})}
    if payload:
        channel["payload"] = payload
    if content:
        channel["_payload"] = {"extension": [{
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
            "valueCode": content}]}
    response = http.post("/Subscription", json={"resourceType": "Subscription", "status": "requested",
                                                "reason": "test", "criteria": criteria, "channel": channel})
    assert response.status_code == 201, response.text
    return response.json()


def observation(code: str, value: float = 1.0) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "urn:test:subscriptions", "code": code}]},
            "valueQuantity": {"value": value, "unit": "mm"}}


def created(http: httpx.Client, body: dict) -> dict:
    response = http.post(f"/{body['resourceType']}", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_matching_write_reaches_the_receiver_within_one_second_with_its_resource_signed(
        deployment: Deployment, receiver: Receiver) -> None:
    code = uuid.uuid4().hex
    subscription = subscribe(deployment.admin, f"Observation?code=urn:test:subscriptions|{code}", receiver.url,
                             payload="application/fhir+json", headers=("Authorization: Bearer receiver-token",))
    assert subscription["status"] == "active"

    written = created(deployment.admin, observation(code, 4.5))
    answered = time.monotonic()

    [notification] = receiver.wait_for(1)
    assert notification.at - answered < 1.0
    assert notification.method == "PUT"
    assert notification.path == f"/hook/Observation/{written['id']}"
    assert orjson.loads(notification.body) == written
    assert notification.headers["Authorization"] == "Bearer receiver-token"
    assert notification.headers["X-Fhirfus-Subscription"] == f"Subscription/{subscription['id']}"
    own_key = hmac.new(KEY.encode(), f"Subscription/{subscription['id']}".encode(), hashlib.sha256).hexdigest()
    expected = hmac.new(own_key.encode(), notification.body, hashlib.sha256).hexdigest()
    assert notification.headers["X-Fhirfus-Signature"] == f"sha256={expected}"


def test_id_only_sends_the_id_and_version_and_no_payload_sends_no_body(
        deployment: Deployment, receiver: Receiver) -> None:
    code = uuid.uuid4().hex
    subscribe(deployment.admin, f"Observation?code={code}", receiver.url, payload="application/fhir+json",
              content="id-only")
    bare = Receiver().start()
    try:
        subscribe(deployment.admin, f"Observation?code={code}", bare.url)
        written = created(deployment.admin, observation(code))
        [id_only] = receiver.wait_for(1)
        [ping] = bare.wait_for(1)
    finally:
        bare.stop()
    assert orjson.loads(id_only.body) == {"resourceType": "Observation", "id": written["id"],
                                          "meta": {"versionId": "1"}}
    assert (ping.method, ping.path, ping.body) == ("POST", "/hook", b"")


def test_nothing_for_writes_that_do_not_match_nor_for_another_sites_writes(
        deployment: Deployment, receiver: Receiver) -> None:
    family = f"Fam{uuid.uuid4().hex[:10]}"
    subscription = subscribe(deployment.site_a, f"Patient?family={family}", receiver.url,
                             payload="application/fhir+json")
    assert {"system": SITE, "code": deployment.sites[0]} in subscription["meta"]["security"]

    created(deployment.site_b, {"resourceType": "Patient", "name": [{"family": family}]})   # another site's
    created(deployment.site_a, {"resourceType": "Patient", "name": [{"family": "Other"}]})  # does not match
    created(deployment.admin, {"resourceType": "Patient", "name": [{"family": family}]})    # of no site
    own = created(deployment.site_a, {"resourceType": "Patient", "name": [{"family": family}]})

    # Delivery is in queue order: had anything before ``own`` been queued, it would come first.
    [first] = receiver.wait_for(1)
    assert orjson.loads(first.body)["id"] == own["id"]
    time.sleep(0.3)
    assert len(receiver.received) == 1


def test_while_the_receiver_is_down_notifications_wait_then_arrive_in_order(
        deployment: Deployment, receiver: Receiver) -> None:
    code = uuid.uuid4().hex
    subscription = subscribe(deployment.admin, f"Observation?code={code}", receiver.url,
                             payload="application/fhir+json")
    receiver.stop()
    first = created(deployment.admin, observation(code, 1))
    for value in (2, 3):
        response = deployment.admin.put(f"/Observation/{first['id']}", json={**observation(code, value),
                                                                             "id": first["id"]})
        assert response.status_code == 200, response.text
    second = created(deployment.admin, observation(code, 10))
    time.sleep(0.5)  # a few failed attempts (100 ms, 200 ms, …)
    assert queue.waiting(deployment.store, subscription["id"]) == 4

    receiver.start()
    notifications = receiver.wait_for(4)
    bodies = [orjson.loads(n.body) for n in notifications]
    assert [(b["meta"]["versionId"], b["valueQuantity"]["value"]) for b in bodies if b["id"] == first["id"]] == [
        ("1", 1), ("2", 2), ("3", 3)]  # one resource's versions in order (other resources' go beside them)
    assert [(b["meta"]["versionId"], b["valueQuantity"]["value"]) for b in bodies if b["id"] == second["id"]] == [
        ("1", 10)]
    eventually(lambda: queue.waiting(deployment.store, subscription["id"]) == 0)  # deleted once answered
    assert deployment.admin.get(f"/Subscription/{subscription['id']}").json()["status"] == "active"


def test_repeated_failures_set_status_error_with_the_reason_and_reactivation_delivers(
        deployment: Deployment, receiver: Receiver) -> None:
    code = uuid.uuid4().hex
    subscription = subscribe(deployment.admin, f"Observation?code={code}", receiver.url,
                             payload="application/fhir+json")
    receiver.status = 503
    written = created(deployment.admin, observation(code))

    deadline = time.monotonic() + 10
    while (current := deployment.admin.get(f"/Subscription/{subscription['id']}").json())["status"] != "error":
        assert time.monotonic() < deadline, current
        time.sleep(0.1)
    assert f"{ATTEMPTS} deliveries in a row failed" in current["error"]
    assert "HTTP 503" in current["error"]
    assert queue.waiting(deployment.store, subscription["id"]) == 1  # kept, not lost

    receiver.status = 200
    reactivated = deployment.admin.put(f"/Subscription/{subscription['id']}",
                                       json={**current, "status": "requested"})
    assert reactivated.status_code == 200, reactivated.text
    assert reactivated.json()["status"] == "active" and "error" not in reactivated.json()
    [notification] = receiver.wait_for(1)
    assert orjson.loads(notification.body)["id"] == written["id"]


def test_a_rolled_back_transaction_notifies_nobody(deployment: Deployment, receiver: Receiver) -> None:
    code = uuid.uuid4().hex
    subscribe(deployment.admin, f"Observation?code={code}", receiver.url, payload="application/fhir+json")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation(code, 99), "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Patient", "id": uuid.uuid4().hex},
         "request": {"method": "PUT", "url": "Patient/never-written", "ifMatch": 'W/"5"'}},
    ]}
    bundle["entry"][1]["resource"]["id"] = "never-written"
    refused = deployment.admin.post("", json=bundle)
    assert refused.status_code == 412, refused.text

    barrier = created(deployment.admin, observation(code, 1))
    [first] = receiver.wait_for(1)
    assert orjson.loads(first.body)["id"] == barrier["id"]
    time.sleep(0.3)
    assert len(receiver.received) == 1


REFUSED = [
    ({"channel": {"type": "email", "endpoint": "mailto:a@b.example"}}, "Subscription.channel.type"),
    ({"criteria": "Nonsense?x=1"}, "Subscription.criteria"),
    ({"criteria": "Observation?no-such-parameter=1"}, "Subscription.criteria"),
    ({"criteria": "Observation?code=x&_count=5"}, "Subscription.criteria"),
    ({"channel": {"type": "rest-hook", "endpoint": "ftp://files.example/x"}}, "Subscription.channel.endpoint"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://h.example/x", "payload": "application/fhir+xml"}},
     "Subscription.channel.payload"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://h.example/x", "header": ["no colon"]}},
     "Subscription.channel.header[0]"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://h.example/x", "header": ["Content-Type: text/plain"]}},
     "Subscription.channel.header[0]"),
]


@pytest.mark.parametrize(("change", "element"), REFUSED)
def test_subscriptions_the_server_cannot_honour_are_refused_at_create(
        deployment: Deployment, change: dict, element: str) -> None:
    body = {"resourceType": "Subscription", "status": "requested", "reason": "test",
            "criteria": "Observation?code=x", "channel": {"type": "rest-hook", "endpoint": "http://h.example/x"},
            **change}
    before = deployment.admin.get("/Subscription", params={"_summary": "count"}).json()["total"]
    response = deployment.admin.post("/Subscription", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == [element]
    assert deployment.admin.get("/Subscription", params={"_summary": "count"}).json()["total"] == before


def test_a_site_client_cannot_subscribe_to_what_it_may_not_search(deployment: Deployment) -> None:
    response = deployment.site_a.post("/Subscription", json={
        "resourceType": "Subscription", "status": "requested", "reason": "test",
        "criteria": "AuditEvent?action=C", "channel": {"type": "rest-hook", "endpoint": "http://h.example/x"}})
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == ["Subscription.criteria"]


def test_the_capability_statement_declares_rest_hook_subscriptions(deployment: Deployment) -> None:
    statement = httpx.get(deployment.base + "/metadata", timeout=30).json()
    [entry] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    assert "rest-hook" in entry["documentation"]
    assert {"create", "update", "read", "delete"} <= {i["code"] for i in entry["interaction"]}


@pytest.fixture(params=BACKENDS)
def own_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database no other server delivers from."""
    urls = database_url_for(request.param, tmp_path_factory)
    url = next(urls)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        next(urls, None)


def _open_settings(url: str) -> Settings:
    return Settings(database_url=url, auth="off", subscription_retry_ms=50, subscription_poll_ms=50,
                    subscription_attempts=1000, subscription_timeout_ms=2000)


def test_queued_notifications_survive_a_restart_of_the_server(own_database: str, receiver: Receiver) -> None:
    engine = make_engine(own_database)
    try:
        receiver.stop()
        with serving(_open_settings(own_database), Store(engine)) as (root, _app), \
                httpx.Client(base_url=root + "/fhir", timeout=30) as http:
            subscription = subscribe(http, "Observation?code=restart", receiver.url, payload="application/fhir+json")
            written = created(http, observation("restart"))
            time.sleep(0.3)
        assert queue.waiting(Store(engine), subscription["id"]) == 1

        receiver.start()
        with serving(_open_settings(own_database), Store(engine)):
            [notification] = receiver.wait_for(1)
        assert orjson.loads(notification.body)["id"] == written["id"]
    finally:
        engine.dispose()


def test_two_server_processes_deliver_one_queue_once_each(own_database: str, receiver: Receiver) -> None:
    engine = make_engine(own_database)
    try:
        with serving(_open_settings(own_database), Store(engine)) as (one, _a), \
                serving(_open_settings(own_database), Store(engine)) as (two, _b), \
                httpx.Client(timeout=30) as http, httpx.Client(base_url=one + "/fhir", timeout=30) as first:
            subscription = subscribe(first, "Observation?code=pair", receiver.url, payload="application/fhir+json")
            ids = [http.post(f"{root}/fhir/Observation", json=observation("pair", n)).json()["id"]
                   for n in range(20) for root in (one, two)]
            notifications = receiver.wait_for(len(ids))
            eventually(lambda: queue.waiting(Store(engine), subscription["id"]) == 0)
        assert sorted(orjson.loads(n.body)["id"] for n in notifications) == sorted(ids)
        assert len(receiver.received) == len(ids)
    finally:
        engine.dispose()


def test_deleting_a_subscription_drops_what_it_had_queued(deployment: Deployment, receiver: Receiver) -> None:
    code = uuid.uuid4().hex
    subscription = subscribe(deployment.admin, f"Observation?code={code}", receiver.url)
    receiver.stop()
    created(deployment.admin, observation(code))
    assert queue.waiting(deployment.store, subscription["id"]) == 1
    assert deployment.admin.delete(f"/Subscription/{subscription['id']}").status_code in (200, 204)
    eventually(lambda: queue.waiting(deployment.store, subscription["id"]) == 0)


def _fhirfus(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fhirfus.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_the_cli_prints_the_key_a_receiver_checks_signatures_with() -> None:
    done = _fhirfus("subscription-secret", "abc", FHIRFUS_SUBSCRIPTION_KEY=KEY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == hmac.new(KEY.encode(), b"Subscription/abc", hashlib.sha256).hexdigest()
    assert _fhirfus("subscription-secret", "abc", FHIRFUS_SUBSCRIPTION_KEY="").returncode == 2


def test_what_a_cli_data_command_writes_is_notified_by_the_server(
        own_database: str, receiver: Receiver, tmp_path: Path) -> None:
    engine = make_engine(own_database)
    try:
        with serving(_open_settings(own_database), Store(engine)) as (root, _app), \
                httpx.Client(base_url=root + "/fhir", timeout=30) as http:
            subscribe(http, "Observation?code=loaded", receiver.url, payload="application/fhir+json")
            (tmp_path / "obs.ndjson").write_text(orjson.dumps({**observation("loaded"), "id": "from-cli"}).decode())
            done = _fhirfus("load", str(tmp_path / "obs.ndjson"), FHIRFUS_DATABASE_URL=own_database)
            assert done.returncode == 0, done.stderr
            [notification] = receiver.wait_for(1)
        assert notification.path == "/hook/Observation/from-cli"
    finally:
        engine.dispose()


def test_with_private_targets_denied_a_loopback_endpoint_is_never_notified(
        own_database: str, receiver: Receiver) -> None:
    engine = make_engine(own_database)
    settings = Settings(database_url=own_database, auth="off", subscription_poll_ms=50, subscription_attempts=1,
                        subscription_private_targets="deny")
    try:
        with serving(settings, Store(engine)) as (root, _app), \
                httpx.Client(base_url=root + "/fhir", timeout=30) as http:
            subscription = subscribe(http, "Observation?code=ssrf", receiver.url)
            created(http, observation("ssrf"))
            eventually(lambda: http.get(f"/Subscription/{subscription['id']}").json()["status"] == "error")
            assert "private or loopback" in http.get(f"/Subscription/{subscription['id']}").json()["error"]
        assert receiver.received == []
    finally:
        engine.dispose()


def test_an_active_subscription_stored_before_it_was_checked_is_set_to_error_not_ignored(
        deployment: Deployment) -> None:
    sid = uuid.uuid4().hex
    with deployment.store.writing() as conn:  # as an older server stored it: never checked
        repository.create(conn, "Subscription", sid, {
            "resourceType": "Subscription", "status": "active", "reason": "old", "criteria": "Observation?code=x",
            "channel": {"type": "email", "endpoint": "mailto:someone@example.org"}})
    eventually(lambda: deployment.admin.get(f"/Subscription/{sid}").json()["status"] == "error")
    assert "channel.type 'email'" in deployment.admin.get(f"/Subscription/{sid}").json()["error"]


def test_the_versions_of_each_resource_arrive_in_order_when_many_resources_are_delivered_at_once(
        own_database: str, receiver: Receiver) -> None:
    """A backlog of five versions of five resources, built while the receiver is down, arrives
    version after version per resource. Its own server never gives up on the Subscription (a
    shared deployment's few attempts could run out while a loaded machine writes the backlog), and
    the wait allows for the back-off the failures reached."""
    engine = make_engine(own_database)
    code = uuid.uuid4().hex
    try:
        with serving(_open_settings(own_database), Store(engine)) as (root, _app), \
                httpx.Client(base_url=root + "/fhir", timeout=30) as http:
            subscribe(http, f"Observation?code={code}", receiver.url, payload="application/fhir+json")
            receiver.stop()
            ids = [created(http, observation(code, 0))["id"] for _ in range(5)]
            for value in range(1, 5):
                for res_id in ids:
                    response = http.put(f"/Observation/{res_id}", json={**observation(code, value), "id": res_id})
                    assert response.status_code == 200, response.text
            receiver.start()
            bodies = [orjson.loads(n.body) for n in receiver.wait_for(25, timeout=60)]
    finally:
        engine.dispose()
    for res_id in ids:
        assert [b["valueQuantity"]["value"] for b in bodies if b["id"] == res_id] == [0, 1, 2, 3, 4]
