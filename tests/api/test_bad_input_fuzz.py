"""The families behind the bad-input list (issue #16), not just its cases: a generated corpus of
malformed requests — mutated ids and paths, query strings, headers, and bodies (every element of a
Bundle entry given each wrong JSON type, NULs, huge numbers, deep nesting, truncations) — sent to
the server on SQLite and PostgreSQL.

What holds for every request: no 5xx, no dropped connection, every error an OperationOutcome,
and a refused request writes nothing. The corpus is built from a fixed seed, so a failure names a
request that fails again.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from conftest import Server

from tests.domain.test_domain_writes import mrgfus, response_for

SEED = 16
#: Replacements for any element: each JSON type, and the values that broke servers before.
WRONG_VALUES: tuple[object, ...] = (
    None, 0, -1, 2**70, 1.5, True, "", "\u0000", "a\u0000b", " ", "x" * 5000, [], [None], {}, {"a": 1},
    "/", "?x=1", "%00", "Patient/a b", "urn:uuid:", "W/\"99999999999999999999\"",
)
#: Ids (percent-encoded as a client would put them in a URL) outside the R4 rule, or odd ones within.
URL_IDS = ("%00", "a%00b", "a%20b", "%20", "a%0Ab", "a%0D%0Ab", "%FF", "%C3%A9", "%ZZ", "%", "a%2Fb", "..", ".",
           "-", "x" * 65, "x" * 2000, "99999999999999999999", "%E2%80%AE", "a%09b", "_history", "$everything",
           "a;b", "a%3Fb=1", "%2e%2e")
VERSION_IDS = ("99999999999999999999", "1e3", "-1", "0", "01", "1.0", "%00", "%20", "x", "9" * 300, "")


@dataclass
class Request:
    """One request of the corpus: sent raw (the request line exactly as written) or through httpx."""

    method: str
    target: str  # path and query under the server root, as sent on the wire
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None

    def __str__(self) -> str:
        body = f" body={self.body[:120]!r}" if self.body else ""
        return f"{self.method} {self.target[:200]} headers={self.headers}{body}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def send_raw(root: str, request: Request) -> Answer:
    """Send ``request`` over a new socket exactly as written (no client-side URL normalisation)."""
    parts = urlsplit(root)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body = request.body or b""
    head = [f"{request.method} {request.target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in request.headers.items()]
    if request.body is not None:
        head.append(f"Content-Length: {len(body)}")
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    assert raw, f"connection dropped without an answer: {request}"
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        payload = _unchunk(payload)
    return Answer(status, headers, payload)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


# --- the corpus ---------------------------------------------------------------------------------


@dataclass
class Targets:
    """Resources that exist on the server under test (so mutations reach past the lookups)."""

    patient: str
    observation: str


def url_requests(rng: random.Random, targets: Targets) -> Iterator[Request]:
    """Instance-level paths with malformed ids (each id on a sample of the paths, each path with a
    sample of the ids); versions likewise."""
    json_body = {"Content-Type": "application/fhir+json"}
    templates = [
        ("GET", "/fhir/Patient/{}", {}, None), ("HEAD", "/fhir/Patient/{}", {}, None),
        ("DELETE", "/fhir/Patient/{}", {}, None), ("PUT", "/fhir/Patient/{}", json_body, b'{"resourceType":"Patient"}'),
        ("PATCH", "/fhir/Patient/{}", {"Content-Type": "application/json-patch+json"}, b"[]"),
        ("GET", "/fhir/Patient/{}/_history", {}, None), ("GET", "/fhir/Patient/{}/_history/1", {}, None),
        ("GET", "/fhir/Patient/{}/$everything", {}, None),
        ("POST", "/fhir/Patient/{}/$validate", json_body, b'{"resourceType":"Patient"}'),
        ("GET", "/fhir/_export/{}", {}, None), ("DELETE", "/fhir/_export/{}", {}, None),
        ("GET", "/fhir/_export/{}/Patient.1.ndjson", {}, None),
        ("GET", "/fhir/Group/{}/$export", {"Prefer": "respond-async"}, None),
        ("GET", "/fhir/Group/{}/$analysis-export", {"Prefer": "respond-async"}, None),
        ("GET", "/fhir/QuestionnaireResponse/{}/$extract", {}, None), ("GET", "/fhir/{}", {}, None),
        ("GET", "/fhir/Binary/{}", {"Accept": "*/*"}, None),
        ("PUT", "/fhir/Binary/{}", {"Content-Type": "text/plain"}, b"native"),
        ("GET", "/fhir/ViewDefinition/{}/$run", {}, None),
        ("GET", "/fhir/ValueSet/{}/$expand", {}, None), ("GET", "/fhir/CodeSystem/{}/$validate-code?code=x", {}, None),
        ("GET", "/fhir/ConceptMap/{}/$translate?code=x&system=http://x", {}, None),
        ("GET", "/fhir/ValueSet/$expand?url={}", {}, None), ("GET", "/fhir/CodeSystem/$lookup?system={}&code={}", {}, None),
        ("GET", "/fhir/{}/" + targets.patient, {}, None),
    ]
    for bad in URL_IDS:
        for method, path, headers, body in rng.sample(templates, 9):
            yield Request(method, path.replace("{}", bad), dict(headers), body)
    for version in VERSION_IDS:
        yield Request("GET", f"/fhir/Patient/{targets.patient}/_history/{version}")
    for path in ("/fhir/%00", "/fhir/Patient/_history/1", f"/fhir/Patient/{targets.patient}/_history/1/x",
                 "/fhir/Patient/a/b/c/d/e", "/fhir/$nothing", "/fhir//Patient", "/fhir/Patient/%2e%2e/%2e%2e/metadata",
                 "/fhir/_export", "/fhir/_analysis/%00", "/fhir/metadata/%00"):
        yield Request("GET", path)


QUERY_PIECES = (
    "_count=-1", "_count=1e309", "_count=99999999999999999999", "_count=%00", "birthdate=ge99999-01-01",
    "birthdate=1e3", "birthdate=2020-13-45", "_lastUpdated=gt%00", "_sort=%00", "_sort=-", "_include=x",
    "_include=Observation:subject:Nothing", "_revinclude=%00:%00", "_has:=x", "_has:Observation=x",
    "subject:Foo.name=x", "subject.name.family=x", "value-quantity=1e400", "value-quantity=gt1e400|x|y",
    "_id=" + "x" * 3000, "name=%FF", "name=%ZZ", "_cursor=garbage", "_cursor=" + "A" * 500, "_summary=%00",
    "_elements=%00", "name:bogus=x", "name:=x", "=x", "&&&", "name", "code=a|b|c", "code=%7C", "identifier=|",
    "_total=x", "_format=%00", "_pretty=x", "_type=Nothing", "_type=%00", "date=gt", "probability=ge1e400",
    "subject=Patient/%00", "subject:Patient=%00", "subject=" + "x" * 1100, "_tag:not=%00", "_profile=%00",
    "name=" + ",".join("x" * 5 for _ in range(150)), "given:contains=%25", "gender:in=http://x%00",
    "_security=|%00", "combo-code-value-quantity=a$b$c$d", "code-value-quantity=$", "_since=nonsense",
    "name=%ED%A0%80", "subject:Patient.name=%ED%A0%80", "_id=%ED%A0%80",
)


def query_requests(rng: random.Random) -> Iterator[Request]:
    """Single malformed parameters on type and system search and history, then random mixes of them."""
    for piece in QUERY_PIECES:
        yield Request("GET", f"/fhir/Observation?{piece}")
    for piece in rng.sample(QUERY_PIECES, 20):
        yield Request("GET", f"/fhir?{piece}")
        yield Request("GET", f"/fhir/Patient/_history?{piece}")
    for _ in range(30):
        mix = "&".join(rng.choice(QUERY_PIECES) for _ in range(rng.randint(2, 6)))
        yield Request("GET", f"/fhir/Patient?{mix}")
    yield Request("GET", "/fhir/Patient?" + "&".join(["name=x"] * 500))
    yield Request("GET", "/fhir/Patient?name=" + "x" * 60_000)
    yield Request("GET", "/fhir/Observation?" + "subject:Patient." + "link:Patient." * 9 + "name=x")


HEADER_CASES = (
    {"If-Match": "garbage"}, {"If-Match": 'W/"99999999999999999999"'}, {"If-Match": 'W/"-1"'},
    {"If-None-Match": 'W/"1e3"'}, {"If-None-Exist": "name=%00"}, {"If-None-Exist": "&&&"},
    {"If-None-Exist": "_has:=x"}, {"Prefer": "return=%00"}, {"Prefer": "handling=" + "x" * 3000},
    {"Accept": "application/fhir+xml"}, {"Accept": "*/*;q=x"}, {"Content-Type": "text/plain"},
    {"Content-Type": "application/fhir+json; charset=latin-1"}, {"Content-Type": ""},
    {"If-Modified-Since": "yesterday"}, {"Authorization": "Bearer %00"}, {"Content-Encoding": "gzip"},
)


def header_requests(targets: Targets) -> Iterator[Request]:
    patient = json.dumps({"resourceType": "Patient", "name": [{"family": "Header"}]}).encode()
    for headers in HEADER_CASES:
        yield Request("POST", "/fhir/Binary", {"Content-Type": "application/octet-stream", **headers}, b"\x00\xff")
        sent = {"Content-Type": "application/fhir+json", **headers}
        yield Request("POST", "/fhir/Patient", sent, patient)
        yield Request("PUT", f"/fhir/Patient/{targets.patient}", sent,
                      json.dumps({"resourceType": "Patient", "id": targets.patient}).encode())
        yield Request("GET", f"/fhir/Patient/{targets.patient}", headers)


def _transaction(targets: Targets) -> dict:
    """A transaction touching every kind of entry; its elements are what the mutations replace."""
    patch = base64.b64encode(json.dumps([{"op": "add", "path": "/active", "value": True}]).encode()).decode()
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0d8f2f43-5b9a-4e8e-9a77-9f0e2b2a0001",
         "resource": {"resourceType": "Patient", "name": [{"family": "Fuzz", "given": ["A"]}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:fuzz|1"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "urn:uuid:0d8f2f43-5b9a-4e8e-9a77-9f0e2b2a0001"},
                      "valueQuantity": {"value": 1.5, "unit": "mm"}},
         "request": {"method": "PUT", "url": f"Observation/{targets.observation}", "ifMatch": 'W/"1"'}},
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": patch},
         "request": {"method": "PATCH", "url": f"Patient/{targets.patient}"}},
        {"request": {"method": "GET", "url": "Patient?name=Fuzz&_count=1"}},
        {"request": {"method": "DELETE", "url": "Patient?identifier=urn:fuzz|nobody"}},
    ]}


def _paths(document: object, prefix: tuple = ()) -> Iterator[tuple]:
    """Every element path of a JSON document (dict keys and list indexes), the root excluded."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


def _replaced(document: dict, path: tuple, value: object) -> dict:
    copied = copy.deepcopy(document)
    target = copied
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copied


def _nested(depth: int) -> str:
    """JSON text nested ``depth`` levels deep (written as text: encoders refuse such depths)."""
    return "[" * depth + '"x"' + "]" * depth if depth % 2 else '{"a":' * depth + '"x"' + "}" * depth


def body_requests(rng: random.Random, targets: Targets) -> Iterator[Request]:
    """A transaction and a batch with one element replaced by a wrong value; truncated bodies; deep nesting."""
    headers = {"Content-Type": "application/fhir+json"}
    bundle = _transaction(targets)
    cases = [(path, value) for path in _paths(bundle) for value in WRONG_VALUES]
    for path, value in rng.sample(cases, 100):
        mutated = _replaced(bundle, path, value)
        yield Request("POST", "/fhir", headers, json.dumps(mutated).encode())
        if rng.random() < 0.4:
            yield Request("POST", "/fhir", headers, json.dumps({**mutated, "type": "batch"}).encode())
    text = json.dumps(bundle).encode()
    for cut in sorted(rng.sample(range(1, len(text)), 15)):
        yield Request("POST", "/fhir", headers, text[:cut])
    patient = {"resourceType": "Patient", "name": [{"family": "Deep"}]}
    for path, value in rng.sample([(p, v) for p in _paths(patient) for v in WRONG_VALUES], 25):
        yield Request("POST", "/fhir/Patient", headers, json.dumps(_replaced(patient, path, value)).encode())
    for depth in (50, 401, 1100):
        deep = _nested(depth)
        yield Request("POST", "/fhir/Patient", headers, (
            '{"resourceType":"Patient","extension":[{"url":"http://x","valueString":"x","x":' + deep + "}]}").encode())
        yield Request("POST", "/fhir", headers, (
            '{"resourceType":"Bundle","type":"batch","entry":[{"resource":' + deep
            + ',"request":{"method":"POST","url":"Patient"}}]}').encode())
        yield Request("GET", "/fhir/Patient?_elements=" + "a." * depth)
    for number in (b"1e400", b"-1e400", b"123456789012345678901234567890", b"NaN", b"Infinity"):
        yield Request("POST", "/fhir/Observation", headers,
                      b'{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":' + number + b"}}")
    for raw in (b"\x00", b"\xff\xfe", b'{"resourceType":"Patient","name":[{"family":"\\ud800"}]}',
                b'{"resourceType":"Patient","name":[{"family":"\xed\xa0\x80"}]}', b"{\"resourceType\":\"Patient\"" + b" " * 10, b"[]", b"null", b"\"Patient\"",
                b"{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":{}}"):
        yield Request("POST", "/fhir", headers, raw)
        yield Request("POST", "/fhir/Patient", headers, raw)
    operations = ([{"op": "replace", "path": "/id", "value": "x"}], [{"op": "add", "path": "/meta/versionId", "value": "9"}],
                  [{"op": "move", "from": "/name", "path": "/name/0"}], [{"op": "add", "path": "/" + "a/" * 300, "value": 1}],
                  [{"op": "test", "path": "/id", "value": {}}], [{"op": 5, "path": 5}], {"op": "add"}, [[]], [None])
    for ops in operations:
        yield Request("PATCH", f"/fhir/Patient/{targets.patient}", {"Content-Type": "application/json-patch+json"},
                      json.dumps(ops).encode())


def unparsable_requests() -> Iterator[Request]:
    """Requests the HTTP parser itself refuses: they are answered with an OperationOutcome too."""
    yield Request("GET", "/fhir/Patient/a b")
    yield Request("GET", "/fhir/Patient/a\x00b")
    yield Request("GET", "/fhir/Patient?name=" + "x" * 70_000)
    yield Request("GET", "/fhir/Patient", {"Bad Header": "x"})
    yield Request("GET", "/fhir/Patient", {"X-Nul": "a\x00b"})
    yield Request("POST", "/fhir/Patient", {"Content-Type": "application/fhir+json", "Transfer-Encoding": "chunked"},
                  b"zz\r\n")


def domain_requests(rng: random.Random, targets: Targets) -> Iterator[Request]:
    """The fhirfus domain rules and operations on mutated input: a TWSTRS QuestionnaireResponse (stored,
    ``$extract``, ``$validate``), an MRgFUS Procedure, Bulk kick-off parameters, form searches."""
    headers = {"Content-Type": "application/fhir+json"}
    response = response_for(targets.patient)
    procedure = mrgfus(targets.patient, "vo-complex")
    response_cases = [(p, v) for p in _paths(response) for v in WRONG_VALUES]
    for path, value in rng.sample(response_cases, 50):
        body = json.dumps(_replaced(response, path, value)).encode()
        yield Request(rng.choice(("POST", "PUT")), "/fhir/QuestionnaireResponse" + (
            "" if rng.random() < 0.5 else f"/fuzz-{rng.randrange(10**6)}"), headers, body)
    for path, value in rng.sample(response_cases, 20):
        yield Request("POST", "/fhir/QuestionnaireResponse/$extract", headers,
                      json.dumps(_replaced(response, path, value)).encode())
    for path, value in rng.sample([(p, v) for p in _paths(procedure) for v in WRONG_VALUES], 25):
        changed = json.dumps(_replaced(procedure, path, value)).encode()
        yield Request("POST", "/fhir/Procedure", headers, changed)
        yield Request("POST", "/fhir/Procedure/$validate", headers, changed)
    parameters = {"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient"}, {"name": "patient", "valueReference": {"reference": "Patient/x"}}]}
    for path, value in rng.sample([(p, v) for p in _paths(parameters) for v in WRONG_VALUES], 20):
        yield Request("POST", "/fhir/Patient/$export", {**headers, "Prefer": "respond-async"},
                      json.dumps(_replaced(parameters, path, value)).encode())
    wrapped = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {"resourceType": "Patient"}}]}
    for path, value in rng.sample([(p, v) for p in _paths(wrapped) for v in WRONG_VALUES], 15):
        yield Request("POST", "/fhir/Patient/$validate", headers, json.dumps(_replaced(wrapped, path, value)).encode())
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for target in ("/fhir/ValueSet/$expand", "/fhir/CodeSystem/$lookup", "/fhir/ConceptMap/$translate",
                   "/fhir/ValueSet/$validate-code", "/fhir/CodeSystem/$subsumes"):
        yield Request("POST", target, form, b"url=a%00b&system=%00&code=%00&codeA=%00&codeB=x")
        lookup = {"resourceType": "Parameters", "parameter": [{"name": "url", "valueUri": "http://x"},
                                                              {"name": "code", "valueCode": "x"}]}
        path, value = rng.choice([(p, v) for p in _paths(lookup) for v in WRONG_VALUES])
        yield Request("POST", target, headers, json.dumps(_replaced(lookup, path, value)).encode())
    for wrong in (True, -1, "x", {}, [5], None):  # every Parameters body: its one array of the wrong type
        body = json.dumps({"resourceType": "Parameters", "parameter": wrong}).encode()
        yield Request("POST", "/fhir/Patient/$validate", headers, body)
        yield Request("POST", "/fhir/$validate", headers, body)
        yield Request("POST", "/fhir/Patient/$export", {**headers, "Prefer": "respond-async"}, body)
        yield Request("PATCH", f"/fhir/Patient/{targets.patient}", headers, body)
        yield Request("POST", "/fhir/ValueSet/$expand", headers, body)
        yield Request("POST", "/fhir/ViewDefinition/$run", headers, body)
    for piece in rng.sample(QUERY_PIECES, 15):
        yield Request("POST", "/fhir/Observation/_search", {"Content-Type": "application/x-www-form-urlencoded"},
                      piece.encode())


XML_BODIES = (
    b'<Patient xmlns="http://hl7.org/fhir"><name><family value="Xml"/></name></Patient>',
    b'<Patient xmlns="http://hl7.org/fhir"><name><family value="X',
    b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b'<Patient xmlns="http://hl7.org/fhir"><name><family value="&e;"/></name></Patient>',
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
    b'<Patient xmlns="http://hl7.org/fhir"><name><family value="&d;"/></name></Patient>',
    b'<Patient xmlns="http://hl7.org/fhir"><name><family value="a&#0;b"/></name></Patient>',
    b'<Patient xmlns="http://hl7.org/fhir"><name><family value="a\x00b"/></name></Patient>',
    b'<Patient xmlns="http://hl7.org/fhir"><name><family value="\xff\xfe"/></name></Patient>',
    b'<Patient xmlns="http://hl7.org/fhir">' + b"<extension url=\"http://x\">" * 3000 + b"</Patient>",
    b'<Patient xmlns="http://hl7.org/fhir"><id value="a b"/></Patient>',
    b'<Patient xmlns="http://hl7.org/fhir"><active value="maybe"/><active value="true"/></Patient>',
    b'<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"/><entry><request><method value="GET"/>'
    b'<url value="/"/></request></entry></Bundle>',
    b'<Nothing xmlns="http://hl7.org/fhir"/>', b'<Patient xmlns="http://example.org"/>', b"<<>>", b"",
)


def xml_requests(rng: random.Random, targets: Targets) -> Iterator[Request]:
    """FHIR XML bodies: malformed, entity tricks, NUL character references, deep nesting; and
    FHIRPath Patch (a Parameters body) with each element given a wrong value."""
    for body in XML_BODIES:
        for content_type in ("application/fhir+xml", "application/xml"):
            yield Request("POST", "/fhir/Patient", {"Content-Type": content_type}, body)
        yield Request("POST", "/fhir", {"Content-Type": "application/fhir+xml"}, body)
        yield Request("PUT", f"/fhir/Patient/{targets.patient}", {"Content-Type": "application/fhir+xml"}, body)
    patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.active"},
        {"name": "value", "valueBoolean": True}]}]}
    for path, value in rng.sample([(p, v) for p in _paths(patch) for v in (*WRONG_VALUES, "Patient.id", "Patient.meta",
                                                                            "Patient.where(", "%x")], 40):
        yield Request("PATCH", f"/fhir/Patient/{targets.patient}", {"Content-Type": "application/fhir+json"},
                      json.dumps(_replaced(patch, path, value)).encode())


def corpus(targets: Targets) -> list[Request]:
    rng = random.Random(SEED)
    return [*url_requests(rng, targets), *unparsable_requests(), *query_requests(rng), *header_requests(targets), *body_requests(rng, targets),
            *domain_requests(rng, targets), *xml_requests(rng, targets)]


# --- the checks -----------------------------------------------------------------------------------


@pytest.fixture
def targets(server: Server) -> Targets:
    with server.client() as http:
        patient = http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Fuzz"}]})
        observation = http.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                                      "code": {"text": "x"}})
        assert patient.status_code == observation.status_code == 201
        return Targets(patient.json()["id"], observation.json()["id"])


def problems_of(request: Request, answer: Answer) -> list[str]:
    """What is wrong with one answer (empty: fine)."""
    if answer.status >= 500:
        return [f"{answer.status} for {request}: {answer.body[:300]!r}"]
    if answer.status < 400 or request.method == "HEAD":
        return _batch_problems(request, answer) if answer.status == 200 and request.target == "/fhir" else []
    try:
        outcome = json.loads(answer.body)
    except ValueError:
        return [f"{answer.status} without a JSON body for {request}: {answer.body[:200]!r}"]
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return [f"{answer.status} without an OperationOutcome for {request}: {answer.body[:200]!r}"]
    return []


def _batch_problems(request: Request, answer: Answer) -> list[str]:
    """A batch-response: no entry answered 5xx, every failed entry carries an OperationOutcome."""
    try:
        entries = json.loads(answer.body).get("entry") or []
    except (ValueError, AttributeError):
        return [f"200 without a JSON Bundle for {request}"]
    found = []
    for entry in entries:
        response = entry.get("response", {})
        status = response.get("status", "")
        if status.startswith("5") or (status.startswith("4") and
                                      response.get("outcome", {}).get("resourceType") != "OperationOutcome"):
            found.append(f"batch entry {status} for {request}: {response}")
    return found


def test_no_malformed_request_gets_a_5xx_or_writes_anything(server: Server, targets: Targets) -> None:
    root = server.base.removesuffix("/fhir")
    requests = corpus(targets)
    assert 300 <= len(requests) <= 1000, len(requests)
    problems: list[str] = []
    refused = 0
    for request in requests:
        before = server.database.counts()
        try:
            answer = send_raw(root, request)
        except (OSError, AssertionError) as exc:
            problems.append(f"no answer ({exc}) for {request}")
            continue
        problems += problems_of(request, answer)
        if answer.status >= 400:
            refused += 1
            after = server.database.counts()
            if after != before:
                problems.append(f"refused ({answer.status}) but wrote {after} vs {before}: {request}")
    assert not problems, f"{len(problems)} of {len(requests)} requests:\n" + "\n".join(problems[:40])
    assert refused > len(requests) // 2  # the corpus is mostly refused: it tests the refusals


def test_the_corpus_is_the_same_on_every_run() -> None:
    targets = Targets(str(uuid.UUID(int=1)), str(uuid.UUID(int=2)))
    assert [str(r) for r in corpus(targets)] == [str(r) for r in corpus(targets)]


def test_a_dropped_connection_is_seen_as_one() -> None:
    """The raw sender fails when a server closes without answering (so the fuzz test would notice)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def close_at_once() -> None:
        connection, _ = listener.accept()
        connection.recv(1024)
        connection.close()

    thread = threading.Thread(target=close_at_once)
    thread.start()
    with pytest.raises(AssertionError, match="connection dropped"):
        send_raw(f"http://127.0.0.1:{port}", Request("GET", "/fhir/metadata"))
    thread.join()
    listener.close()

