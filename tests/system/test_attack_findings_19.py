"""An attacker's pass over issue #19 (Bulk ``$import``, Subscriptions, ``fhirfus pull``): every finding
as the rule it defends, over the whole family of inputs that broke it. Auth off (``client``) unless
a rule is about who may do what; servers the attacker controls are real HTTP servers on loopback.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import orjson
import pytest
from auth_helpers import make_client
from conftest import TEST_DEID_KEY, Database, serving
from sqlalchemy import select

from fhirfus.addresses import is_public
from fhirfus.auth.access import SERVER
from fhirfus.bulk.imports.sources import FetchLimits, fetch, manifest_inputs
from fhirfus.db.tables import resources
from fhirfus.db.visibility import with_site_label
from fhirfus.errors import FhirError
from fhirfus.interactions import bundles
from fhirfus.pull import definitions
from fhirfus.pull.client import MAX_ANSWER_BYTES, PullError
from fhirfus.pull.run import pull_once
from fhirfus.settings import Settings
from fhirfus.store.repository import Store
from fhirfus.subscriptions import delivery
from fhirfus.testing import Receiver
from tests.pull.test_pull_other_servers import Source, _handler, _held, _key_file

ASYNC = {"Prefer": "respond-async"}


def _import_parameters(*parameters: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": list(parameters)}


def _input(url: str) -> dict:
    return {"name": "input", "part": [{"name": "type", "valueCode": "Patient"}, {"name": "url", "valueUri": url}]}


def _subscription(endpoint: str, headers: list[str] | None = None) -> dict:
    channel: dict = {"type": "rest-hook", "endpoint": endpoint, **({"header": headers} if headers else {})}
    return {"resourceType": "Subscription", "status": "requested", "reason": "attack", "criteria": "Observation",
            "channel": channel}


# --- a URL a client gives is parsed whole: a malformed one is a 4xx naming it, never a 500 -------

MALFORMED_URLS = [
    "http://[::1",                  # unclosed IPv6 bracket (urlsplit raises)
    "http://[::1]x/Patient.ndjson",  # text after the bracket
    "http://example.org:99999/x",   # port out of range (SplitResult.port raises)
    "http://example.org:abc/x",     # port not a number
    "http://example.org:0/x",       # port 0
    "http://\u2100.com/x",          # netloc that NFKC-normalises into URL syntax
    "http://example.org/a b",       # a space
    "http://example.org/\tx",       # a control character
]


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_a_malformed_import_url_is_a_400_naming_the_input(client: httpx.Client, url: str) -> None:
    """Rule: an ``$import`` kick-off's URL (a Parameters ``input``, a manifest's ``output``, a
    ``manifestUrl``) that does not parse as http(s) with a valid port is a 400 naming where it was
    given. Before, ``urlsplit``/``.port`` raised ``ValueError`` and the kick-off was a 500."""
    cases = [  # the element, or the datatype element when FHIR validation already refuses the uri
        (_import_parameters(_input(url)), {"input[0].url", "Parameters.parameter[0].part[1].valueUri"}),
        ({"output": [{"type": "Patient", "url": url}]}, {"input[0].url"}),
        (_import_parameters({"name": "manifestUrl", "valueUrl": url}),
         {"Parameters.parameter[0].value", "Parameters.parameter[0].valueUrl"}),
    ]
    for body, elements in cases:
        answer = client.post("/$import", headers=ASYNC, json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["issue"][0]["expression"][0] in elements, answer.text


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_a_malformed_subscription_endpoint_is_refused_at_create(client: httpx.Client, url: str) -> None:
    """Rule: ``channel.endpoint`` parses whole (host, port) or the write is a 422 naming it and
    nothing is stored (400 when FHIR's ``url`` datatype already refuses it). Before, some were a 500 and others (a bad port) were stored and made every
    delivery raise an error the worker did not expect."""
    before = client.get("/Subscription", params={"_summary": "count"}).json()["total"]
    answer = client.post("/Subscription", json=_subscription(url))
    assert answer.status_code in (400, 422), answer.text
    assert answer.json()["issue"][0]["expression"] == ["Subscription.channel.endpoint"]
    assert client.get("/Subscription", params={"_summary": "count"}).json()["total"] == before


# --- SSRF: an address is judged by the address it reaches ---------------------------------------

NOT_PUBLIC = [
    "::ffff:127.0.0.1",      # IPv4-mapped loopback
    "::127.0.0.1",           # IPv4-compatible loopback (is_global before)
    "64:ff9b::a9fe:a9fe",    # NAT64 of 169.254.169.254, the cloud metadata address (is_global before)
    "64:ff9b::7f00:1",       # NAT64 of loopback
    "2002:c0a8:101::1",      # 6to4 of 192.168.1.1 (is_global before)
    "2002:7f00:1::1",        # 6to4 of loopback
    "100.64.0.1",            # shared address space (a Subscription's private check let it through)
    "0.0.0.0",
    "::",
    "224.0.0.251",           # multicast
    "fd00::1",
]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_an_ipv6_form_of_a_private_address_is_no_public_import_host(client: httpx.Client, address: str) -> None:
    """Rule: ``$import`` refuses a URL whose host is not public, whatever form the address takes.
    Before, ``is_global`` alone judged IPv6 forms that embed an IPv4 address (IPv4-compatible,
    6to4, NAT64) as public, so ``http://[64:ff9b::a9fe:a9fe]/`` passed the SSRF check."""
    host = f"[{address}]" if ":" in address else address
    answer = client.post("/$import", headers=ASYNC, json=_import_parameters(_input(f"http://{host}/Patient.ndjson")))
    assert answer.status_code == 400, answer.text
    issue = answer.json()["issue"][0]
    assert "non-public address" in issue["diagnostics"] and issue["expression"] == ["input[0].url"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_the_import_and_subscription_checks_agree_on_what_is_private(address: str) -> None:
    """Rule: one judgement of addresses serves ``$import`` and Subscription delivery (``deny``).
    Before, delivery's own list missed the shared range ``100.64.0.0/10`` and every IPv6 form
    embedding a private IPv4 address."""
    host = f"[{address}]" if ":" in address else address
    assert not is_public(address)
    assert delivery.private_target(f"http://{host}/hook")


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_stay_public_in_every_form(address: str) -> None:
    """The rule above keeps public addresses reachable, also through NAT64 and 6to4."""
    host = f"[{address}]" if ":" in address else address
    assert is_public(address)
    assert not delivery.private_target(f"http://{host}/hook")


# --- Subscription headers: only what the delivery can send --------------------------------------

@pytest.mark.parametrize("header", [
    "X-Token: caf\u00e9",          # beyond ASCII: httpx cannot encode it (UnicodeEncodeError)
    "X-Token: a\u0000b",           # NUL
    "X-Token: a\u000bb",           # vertical tab
    "X-Token: a\u007fb",           # DEL
    "X-Token: a\u2028b",           # Unicode line separator
    "X-Token: \u001b[31mred",      # escape sequence
    "X-Token: a\rInjected: 1",     # CR
    "X-Token: a\nInjected: 1",     # LF
])
def test_a_channel_header_the_delivery_cannot_send_is_refused_at_create(client: httpx.Client, header: str) -> None:
    """Rule: every ``channel.header`` value is printable ASCII (and tabs), or the write is a 422 naming
    it (400 when FHIR's ``string`` already refuses a control character). Before, a value beyond ASCII was stored; each delivery then raised ``UnicodeEncodeError``,
    which the worker did not count as a failed delivery: the notifications stayed leased and were
    retried for ever, and the Subscription never went to ``error``."""
    answer = client.post("/Subscription", json=_subscription("http://example.org/hook", ["X-Ok: fine", header]))
    assert answer.status_code in (400, 422), answer.text
    assert answer.json()["issue"][0]["expression"] == ["Subscription.channel.header[1]"]


def test_headers_a_receiver_needs_are_still_accepted(client: httpx.Client) -> None:
    answer = client.post("/Subscription", json=_subscription(
        "http://example.org/hook", ["Authorization: Bearer abc.def-ghi", "X-Tabbed:\tvalue with spaces"]))
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize(("url", "headers"), [
    ("http://127.0.0.1:{port}/hook", {"X-Token": "caf\u00e9"}),
    ("http://127.0.0.1:abc/hook", {}),
    ("http://[::1/hook", {}),
])
def test_a_stored_channel_that_cannot_be_sent_is_a_failed_delivery(url: str, headers: dict[str, str]) -> None:
    """Rule: whatever a stored channel holds (one written before these checks), sending it ends in
    ``DeliveryFailed`` — counted, retried, and finally ``status`` ``error`` — never in an exception
    that leaves its notifications leased for ever."""
    receiver = Receiver().start()
    try:
        request = delivery.Request("POST", url.format(port=receiver.port), headers, b"")
        with httpx.Client() as http, pytest.raises(delivery.DeliveryFailed):
            delivery.send(http, request, 2.0, allow_private=False)
        with httpx.Client() as http, pytest.raises(delivery.DeliveryFailed):
            delivery.send(http, request, 2.0, allow_private=True)
        assert receiver.received == []
    finally:
        receiver.stop()


# --- a hostile server cannot hold a kick-off nor fill the hub -----------------------------------

PATIENT_LINE = b'{"resourceType": "Patient", "gender": "other"}\n'


class _Trickle(BaseHTTPRequestHandler):
    """Files that never end: one byte every 0.2 s, always within any read timeout (``/ok.ndjson``
    is one Patient, served at once)."""

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path == "/ok.ndjson":
            self.send_header("Content-Length", str(len(PATIENT_LINE)))
            self.end_headers()
            self.wfile.write(PATIENT_LINE)
            return
        self.end_headers()
        try:
            self.wfile.write(b'{"output": [' if self.path.endswith(".json") else PATIENT_LINE)
            for _ in range(600):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass


@pytest.fixture(scope="module")
def trickling() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/manifest.json"
    finally:
        httpd.shutdown()


def test_a_manifest_url_that_trickles_cannot_hold_the_kick_off(
        database: Database, tmp_path: Path, trickling: str) -> None:
    """Rule: a ``manifestUrl`` is read whole within ``FHIRFUS_IMPORT_FETCH_TIMEOUT`` seconds, or the
    kick-off is a 400 naming it. Before, the timeout bounded each read only: a server sending a byte
    now and then held the request (and a server thread) for as long as it liked."""
    settings = Settings(database_url=database.url, auth="off", deid_key=TEST_DEID_KEY, export_dir=str(tmp_path),
                        import_allowed_hosts=("127.0.0.1",), import_fetch_timeout=1)
    with serving(settings, Store(database.engine)) as (root, _app), \
            httpx.Client(base_url=root + "/fhir", timeout=30) as http:
        started = time.monotonic()
        answer = http.post("/$import", headers=ASYNC, json=_import_parameters(
            {"name": "manifestUrl", "valueUrl": trickling}))
        assert time.monotonic() - started < 10
    assert answer.status_code == 400, answer.text
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["Parameters.parameter[0].value"] and "took longer" in issue["diagnostics"]


def test_an_input_that_trickles_can_be_cancelled_and_frees_the_worker(
        database: Database, tmp_path: Path, trickling: str) -> None:
    """Rule: while an input downloads, the job beats its heartbeat and notices a DELETE at every read,
    so a cancelled job stops and the next job runs. Before, the download was read in 256 kB blocks
    and the job looked only between blocks: a server sending a byte now and then kept the job (and,
    with ``FHIRFUS_IMPORT_MAX_JOBS=1``, every later import of every site) stuck for hours."""
    root_url = trickling.rsplit("/", 1)[0]
    settings = Settings(database_url=database.url, auth="off", deid_key=TEST_DEID_KEY, export_dir=str(tmp_path),
                        import_allowed_hosts=("127.0.0.1",), import_fetch_timeout=5, import_max_jobs=1)
    with serving(settings, Store(database.engine)) as (root, _app), \
            httpx.Client(base_url=root + "/fhir", timeout=30) as http:
        slow = http.post("/$import", headers=ASYNC, json=_import_parameters(_input(f"{root_url}/slow.ndjson")))
        assert slow.status_code == 202, slow.text
        time.sleep(1.5)  # the download has started
        assert http.delete(slow.headers["Content-Location"]).status_code == 202
        deadline = time.monotonic() + 20
        while (next_job := http.post("/$import", headers=ASYNC, json=_import_parameters(
                _input(f"{root_url}/ok.ndjson")))).status_code == 429:
            assert time.monotonic() < deadline, "the cancelled job still holds the worker"
            time.sleep(0.2)
        assert next_job.status_code == 202, next_job.text
        while (status := http.get(next_job.headers["Content-Location"])).status_code == 202:
            assert time.monotonic() < deadline, "the next job did not run: the worker is still busy"
            time.sleep(0.2)
        assert status.status_code == 200 and status.json()["output"][0]["count"] == 1, status.text


def _bomb(label: str) -> dict[str, bytes]:
    """A Patient file of about 1 MB unpacked that the source sends gzipped (it gzips when asked) in a tenth of that."""
    lines = (orjson.dumps({"resourceType": "Patient", "id": f"p{n}", "name": [{"family": label}]}) + b"\n"
             for n in range(16_000))
    return {"/fhir/Binary/Patient-1": b"".join(lines)}


@pytest.mark.parametrize("case", ["gzip bomb file", "huge status answer"])
def test_a_source_cannot_make_the_hub_store_or_hold_without_limit(
    database: Database, tmp_path: Path, unique: str, case: str) -> None:
    """Rule: a pulled file is at most ``FHIRFUS_PULL_MAX_FILE_BYTES`` unpacked, and what the hub reads
    into memory (status, manifest, token answers) at most ``MAX_ANSWER_BYTES``; beyond either the pull
    fails saying so, loads nothing and leaves no partial file. Before, a source could fill the hub's
    disk with one file (or a small gzip bomb) and its memory with one status answer."""
    key, key_path = _key_file(tmp_path)
    label = f"z{unique}"
    files = _bomb(label)
    raw = b'{"pad": "' + b"x" * (MAX_ANSWER_BYTES + 1) + b'"}' if case == "huge status answer" else None
    source = Source("hapi", key.public_key(), files, polls_before_done=0, raw_manifest=raw)  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(source))  # a Bulk Data source in HAPI's style
    source.base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _pull_within_limits(database, tmp_path, label, source, key_path, case)
    finally:
        server.shutdown()


def _pull_within_limits(database: Database, tmp_path: Path, label: str, source: Source, key_path: Path,
                        case: str) -> None:
    files = source.files
    assert len(files["/fhir/Binary/Patient-1"]) > 1_000_000 > 10 * len(gzip.compress(files["/fhir/Binary/Patient-1"]))
    store = Store(database.engine)
    name = f"pull-{label}"
    definitions.save(store, definitions.Definition(
        name, f"{source.base}/fhir", "hub-at-source", str(key_path), label), datetime.now(UTC))
    work = tmp_path / "work"
    with pytest.raises(PullError, match=r"larger than|more than"):
        pull_once(store, definitions.get(store, name), work, lambda: datetime.now(UTC), max_file_bytes=500_000)
    assert definitions.get(store, name).status == "failed"
    assert _held(database, label) == set()
    assert [p for p in work.rglob("*") if p.is_file()] == []
    if case == "gzip bomb file":  # the limit is what refused it: within a larger one the same pull loads
        report = pull_once(store, definitions.get(store, name), work, lambda: datetime.now(UTC),
                           max_file_bytes=2_000_000)
        assert report.written == 16_000 and len(_held(database, label)) == 16_000


# --- a pulled resource cannot reach another site's data through its references -----------------

@pytest.mark.parametrize("form", ["conditional by identifier", "conditional by _id", "rooted", "in an extension"])
def test_a_pulled_reference_cannot_name_another_sites_patient(
        database: Database, tmp_path: Path, unique: str, form: str) -> None:
    """Rule: every reference of a pulled resource either stays outside the hub (another server,
    ``#contained``, ``urn:``) or is put in the pulling site's namespace; one the hub would resolve
    itself fails the pull naming the line, and nothing of it is written. Before, the load ran as the
    server: ``Patient?identifier=…`` was resolved against every site's patients, so a hostile source
    attached its Observations to another site's patient (and learnt from a failed or working pull
    whether that patient exists), and ``/Patient/{id}`` became a reference to any hub id."""
    store = Store(database.engine)
    other, hostile = f"b{unique}", f"a{unique}"
    victim = f"{other}-secret"
    patient = {"resourceType": "Patient", "id": victim, "identifier": [{"system": "urn:mrn", "value": unique}]}
    bundles.process(bundles.Context(store, SERVER, "", integrity=False), {  # another site's patient, as a pull stores it
        "resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "PUT", "url": f"Patient/{victim}"}, "resource": with_site_label(patient, other)}]},
        "minimal")
    reference = {"conditional by identifier": f"Patient?identifier=urn:mrn|{unique}",
                 "conditional by _id": f"Patient?_id={victim}", "rooted": f"/Patient/{victim}",
                 "in an extension": f"Patient?identifier=urn:mrn|{unique}"}[form]
    observation: dict = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "TWSTRS"}}
    if form == "in an extension":
        observation["extension"] = [{"url": "urn:test:about", "valueReference": {"reference": reference}}]
    else:
        observation["subject"] = {"reference": reference}
    key, key_path = _key_file(tmp_path)
    source = Source("hapi", key.public_key(), {"/fhir/Binary/Observation-1": orjson.dumps(observation) + b"\n"},  # type: ignore[attr-defined]
                    polls_before_done=0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(source))
    source.base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        name = f"pull-{hostile}"
        definitions.save(store, definitions.Definition(
            name, f"{source.base}/fhir", "hub-at-source", str(key_path), hostile), datetime.now(UTC))
        with pytest.raises(PullError, match=r"line 1: Reference .* namespace"):
            pull_once(store, definitions.get(store, name), tmp_path / "work", lambda: datetime.now(UTC))
    finally:
        server.shutdown()
    assert _held(database, hostile) == set()
    assert _held(database, other) == {f"Patient/{victim}"}


def _pull_from(database: Database, tmp_path: Path, site: str, resources: list[dict]) -> None:
    """One pull by ``site`` from a hostile source exporting ``resources`` (raises what the pull raises)."""
    key, key_path = _key_file(tmp_path)
    files = {f"/fhir/Binary/{r['resourceType']}-{n}": orjson.dumps(r) + b"\n" for n, r in enumerate(resources)}
    source = Source("hapi", key.public_key(), files, polls_before_done=0)  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(source))
    source.base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = Store(database.engine)
    try:
        definitions.save(store, definitions.Definition(
            f"pull-{site}", f"{source.base}/fhir", "hub-at-source", str(key_path), site), datetime.now(UTC))
        pull_once(store, definitions.get(store, f"pull-{site}"), tmp_path / f"work-{site}", lambda: datetime.now(UTC))
    finally:
        server.shutdown()


def test_ids_crafted_to_collide_across_site_labels_never_overwrite_another_site(
        database: Database, tmp_path: Path, unique: str) -> None:
    """Rule: site ``S`` exporting ``y-1`` and site ``S-y`` exporting ``1`` both map to ``S-y-1`` at the
    hub; the second pull fails and the first site's resource is unchanged (its site, its content)."""
    first, second = f"s{unique}", f"s{unique}-y"
    _pull_from(database, tmp_path, first, [{"resourceType": "Patient", "id": "y-1", "gender": "female"}])
    with pytest.raises(PullError):
        _pull_from(database, tmp_path, second, [{"resourceType": "Patient", "id": "1", "gender": "male"}])
    assert _held(database, first) == {f"Patient/{first}-y-1"} and _held(database, second) == set()
    with database.engine.connect() as conn:
        content = conn.execute(select(resources.c.content).where(
            resources.c.res_type == "Patient", resources.c.res_id == f"{first}-y-1")).scalar_one()
    stored = orjson.loads(content) if isinstance(content, (bytes, str)) else content
    assert stored["gender"] == "female"


# --- Subscriptions are bounded per site -----------------------------------------------------------

def test_a_site_cannot_hold_more_subscriptions_than_the_limit(database: Database, tmp_path: Path, unique: str) -> None:
    """Rule: a site holds at most ``FHIRFUS_SUBSCRIPTION_MAX_PER_SITE`` Subscriptions, however it writes
    them (create, transaction); the write beyond is a 422 and writes nothing; deleting one makes room;
    another site's count is its own. Before, a site client could store any number: each is matched
    against every write of its site, and each change made every process recompile all of them."""
    settings = Settings(database_url=database.url, auth="smart", token_secret="attack19-secret-" + unique + "-" * 20,
                        deid_key=TEST_DEID_KEY, rate_limit_per_minute=100_000, token_rate_limit_per_minute=100_000,
                        token_rate_limit_per_address=100_000, subscription_max_per_site=3)
    store = Store(database.engine)
    with serving(settings, store) as (root, _app):
        sites = [make_client(store, root + "/auth/token", role="site", site=f"{name}{unique}", scope="system/*.cruds")
                 for name in ("p", "q")]
        first, second = (client.http(root + "/fhir") for client in sites)
        try:
            made = [first.post("/Subscription", json=_subscription("http://example.org/hook")) for _ in range(3)]
            assert [r.status_code for r in made] == [201, 201, 201]
            beyond = first.post("/Subscription", json=_subscription("http://example.org/hook"))
            assert beyond.status_code == 422, beyond.text
            assert "FHIRFUS_SUBSCRIPTION_MAX_PER_SITE" in beyond.json()["issue"][0]["diagnostics"]
            batch = first.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
                {"request": {"method": "POST", "url": "Subscription"}, "resource": _subscription("http://e.org/h")}]})
            assert batch.status_code == 422, batch.text
            assert first.get("/Subscription", params={"_summary": "count"}).json()["total"] == 3
            assert second.post("/Subscription", json=_subscription("http://example.org/hook")).status_code == 201
            assert first.delete(f"/Subscription/{made[0].json()['id']}").status_code in (200, 204)
            assert first.post("/Subscription", json=_subscription("http://example.org/hook")).status_code == 201
        finally:
            first.close()
            second.close()


# --- DNS rebinding: the address checked is the address fetched ---------------------------------

class _Recording(BaseHTTPRequestHandler):
    """A loopback server standing for an internal service; it records who reached it."""

    seen: ClassVar[list[str]] = []

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        _Recording.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(PATIENT_LINE)))
        self.end_headers()
        self.wfile.write(PATIENT_LINE)

    do_POST = do_GET


@pytest.mark.parametrize("what", ["input", "manifestUrl", "notification"])
def test_a_name_that_rebinds_to_loopback_after_the_check_is_not_fetched(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, what: str) -> None:
    """Rule: an ``$import`` URL is fetched, and a notification (``FHIRFUS_SUBSCRIPTION_PRIVATE_TARGETS=deny``)
    sent, at the address the SSRF check judged. A hostile DNS server
    answers a public address to the check and loopback to the next lookup (rebinding, simulated
    here by the resolver); the internal service must never see a request. Before, the check and
    the HTTP client each resolved the name, so the second answer decided where the request went."""
    internal = ThreadingHTTPServer(("127.0.0.1", 0), _Recording)
    threading.Thread(target=internal.serve_forever, daemon=True).start()
    port = internal.server_address[1]
    real = socket.getaddrinfo
    answers = iter(["93.184.216.34"])  # the first answer only is public

    def rebinding(host: object, *args: object, **kwargs: object) -> list:
        if host != "rebind.example":
            return real(host, *args, **kwargs)  # type: ignore[arg-type]
        address = next(answers, "127.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    limits = FetchLimits(max_inputs=10, max_bytes=1_000_000, timeout=2, allowed_hosts=())
    url = f"http://rebind.example:{port}/Patient.ndjson"
    _Recording.seen = []
    try:
        if what == "notification":
            with httpx.Client() as http, pytest.raises(delivery.DeliveryFailed):
                delivery.send(http, delivery.Request("POST", url, {}, b""), 2.0, allow_private=False)
        else:
            with pytest.raises(FhirError):
                if what == "input":
                    fetch(url, tmp_path / "input.ndjson", limits, limits.max_bytes)
                else:
                    manifest_inputs(url, limits, "manifestUrl")
    finally:
        internal.shutdown()
    assert _Recording.seen == []


@pytest.mark.parametrize("how", ["file url", "redirect"])
def test_a_source_cannot_point_the_hub_at_its_own_network(
        database: Database, tmp_path: Path, unique: str, how: str) -> None:
    """Rule: the hub's requests of a pull go to the source's own host or to public addresses; a
    manifest's file URL or a redirect to another host that is loopback or private fails the pull
    and that service sees no request. Before, the puller fetched whatever the manifest named and
    followed every redirect (blind SSRF from the hub, e.g. to a cloud metadata address)."""
    internal = ThreadingHTTPServer(("127.0.0.1", 0), _Recording)
    threading.Thread(target=internal.serve_forever, daemon=True).start()
    elsewhere = f"http://localhost:{internal.server_address[1]}/latest/meta-data"  # another host name, loopback
    _Recording.seen = []
    key, key_path = _key_file(tmp_path)
    files = {"/fhir/Binary/Patient-1": PATIENT_LINE}
    source = Source("hapi", key.public_key(), files, polls_before_done=0)  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(source))
    source.base = f"http://127.0.0.1:{server.server_address[1]}"
    if how == "file url":
        source.extra = {"output": [{"type": "Patient", "url": elsewhere}]}
    else:
        redirect = ThreadingHTTPServer(("127.0.0.1", 0), _redirecting(elsewhere))
        threading.Thread(target=redirect.serve_forever, daemon=True).start()
        source.extra = {"output": [{"type": "Patient", "url": f"http://127.0.0.1:{redirect.server_address[1]}/f"}]}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = Store(database.engine)
    label = f"n{unique}"
    try:
        definitions.save(store, definitions.Definition(
            f"pull-{label}", f"{source.base}/fhir", "hub-at-source", str(key_path), label), datetime.now(UTC))
        with pytest.raises(PullError, match="neither on the source's host nor at a public address"):
            pull_once(store, definitions.get(store, f"pull-{label}"), tmp_path / "work", lambda: datetime.now(UTC))
    finally:
        server.shutdown()
        internal.shutdown()
        if how == "redirect":
            redirect.shutdown()
    assert _Recording.seen == [] and _held(database, label) == set()


def _redirecting(target: str) -> type[BaseHTTPRequestHandler]:
    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Redirect
