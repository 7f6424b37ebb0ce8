"""Plain creates ahead of routing (``api/createpath.py``): for the same requests, the same status,
headers, body and stored rows as the route, bad input refused alike with nothing written, another
site's caller treated alike, and only the requests the router would give the create route."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import pytest
from auth_helpers import make_client
from fast_paths import answer, both_ways, counted
from sqlalchemy import select

from fhirfus.api import createpath
from fhirfus.api.app import create_app
from fhirfus.db.tables import resource_history, resources
from fhirfus.settings import Settings
from fhirfus.store.repository import Store

SITE = "https://fhirfus.org/fhir/CodeSystem/site"


def observation(unique: str, **extra: object) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": f"createpath-{unique}"},
            "valueQuantity": {"value": 2.5, "unit": "mg"}, **extra}


def stored(database: Any, res_id: str) -> tuple[Any, ...]:
    """The current and history rows of a created resource, without what differs between two creates."""
    with database.engine.connect() as conn:
        current = conn.execute(select(resources).where(resources.c.res_id == res_id)).mappings().one()
        history = conn.execute(select(resource_history).where(resource_history.c.res_id == res_id)).mappings().all()
    content = dict(current["content"], id="*", meta={**current["content"]["meta"], "lastUpdated": "*"})
    return (current["res_type"], current["version"], current["deleted"], current["site"], content,
            [(h["version"], h["method"]) for h in history])


PREFERS = (None, "return=minimal", "return=representation", "return=OperationOutcome")


@pytest.mark.parametrize("prefer", PREFERS)
def test_a_plain_create_answers_and_stores_as_the_route(client: httpx.Client, server: Any, unique: str,
                                                        monkeypatch: pytest.MonkeyPatch, prefer: str | None) -> None:
    headers = {"Prefer": prefer} if prefer else {}
    body = orjson.dumps(observation(unique, subject={"reference": f"Patient/never-{unique}"}))
    no_reference = orjson.dumps(observation(unique))

    fast, routed = both_ways(monkeypatch, createpath, lambda: client.post(
        "/Observation", content=no_reference, headers={"Content-Type": "application/fhir+json", **headers}))
    assert fast.status_code == 201
    assert answer(fast) == answer(routed)
    ids = [r.headers["Location"].split("/")[-3] for r in (fast, routed)]
    assert ids[0] != ids[1]
    assert stored(server.database, ids[0]) == stored(server.database, ids[1])
    # a reference to nothing: the same refusal, nothing written either way
    before = server.database.counts()
    fast, routed = both_ways(monkeypatch, createpath, lambda: client.post(
        "/Observation", content=body, headers={"Content-Type": "application/fhir+json", **headers}))
    assert fast.status_code in range(400, 500) and answer(fast) == answer(routed)
    assert server.database.counts() == before


BAD = [
    ("not json", b"{", {}),
    ("not an object", b"[1, 2]", {}),
    ("wrong type", orjson.dumps({"resourceType": "Patient"}), {}),
    ("invalid element", orjson.dumps({"resourceType": "Observation", "status": "final", "code": {"text": 1}}), {}),
    ("no status", orjson.dumps({"resourceType": "Observation", "code": {"text": "x"}}), {}),
    ("unknown element", orjson.dumps({"resourceType": "Observation", "status": "final", "code": {}, "bogus": 1}), {}),
    ("nul", orjson.dumps({"resourceType": "Observation", "status": "final", "code": {"text": "a\x00b"}}), {}),
    ("media type", orjson.dumps({"resourceType": "Observation"}), {"Content-Type": "text/plain"}),
    ("accept", orjson.dumps({"resourceType": "Observation"}), {"Accept": "text/html"}),
    ("prefer", orjson.dumps({"resourceType": "Observation", "status": "final", "code": {}}),
     {"Prefer": "return=everything"}),
    ("too large", b'{"resourceType": "Observation", "note": [' + b'{"text": "x"},' * 70_000 + b"{}]}", {}),
    ("xml", b"<Observation xmlns='http://hl7.org/fhir'><status value='nonsense'/></Observation>",
     {"Content-Type": "application/fhir+xml"}),
]


@pytest.mark.parametrize(("label", "body", "headers"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_the_same_4xx_outcome_and_writes_nothing(client: httpx.Client, server: Any, label: str,
                                                              body: bytes, headers: dict[str, str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    before = server.database.counts()
    fast, routed = both_ways(monkeypatch, createpath, lambda: client.post("/Observation", content=body, headers=headers))
    assert fast.status_code in range(400, 500), (label, fast.text)
    assert fast.json()["resourceType"] == "OperationOutcome"
    assert answer(fast) == answer(routed)
    assert server.database.counts() == before


def test_other_requests_go_to_the_router(client: httpx.Client, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Conditional creates, a query string and native Binary are the route's; and it still answers them."""
    body = observation(unique, identifier=[{"system": "urn:createpath", "value": unique}])
    with counted(monkeypatch, createpath, True) as taken:
        first = client.post("/Observation", json=body, headers={"If-None-Exist": f"identifier=urn:createpath|{unique}"})
        again = client.post("/Observation", params={"identifier": f"urn:createpath|{unique}"}, json=body)
        xml = client.post("/Observation", params={"_format": "xml"}, json=observation(unique))
        native = client.post("/Binary", content=b"\x00\x01", headers={"Content-Type": "application/octet-stream"})
        unknown = client.post("/Observatio", json=observation(unique))
    assert taken == []
    assert (first.status_code, again.status_code, native.status_code) == (201, 200, 201)
    assert xml.status_code < 500  # the route reads a query string as conditional-create criteria (fhirpy)
    assert unknown.status_code == 404 and unknown.json()["resourceType"] == "OperationOutcome"


def test_the_fast_path_takes_exactly_what_the_router_gives_the_create_route(database: Any) -> None:
    """Every other POST route of one segment under /fhir has a segment no served type can be."""
    app = create_app(Settings(database_url=database.url, auth="off"), Store(database.engine))
    others = [route.path for included in app.routes
              for route in getattr(getattr(included, "original_router", None), "routes", ())
              if route.path.startswith("/fhir/") and "POST" in (getattr(route, "methods", ()) or ())
              and route.endpoint.__name__ != "create"]
    assert "/fhir/_search" in others or "/fhir/{res_type}/_search" in others

    def scope(path: str, query: bytes = b"", headers: tuple = ()) -> dict:
        return {"type": "http", "method": "POST", "path": path, "query_string": query, "headers": list(headers)}

    for template in others:
        path = re.sub(r"\{[^}]+\}", "Observation", template)
        assert createpath.takes(scope(path)) is None, path
    assert createpath.takes(scope("/fhir/Observation")) == "Observation"
    assert createpath.takes(scope("/fhir/Observation/")) is None
    assert createpath.takes(scope("/fhir/Observation", b"_format=xml")) is None
    assert createpath.takes(scope("/fhir/Observation", headers=((b"if-none-exist", b"x=1"),))) is None
    assert createpath.takes(scope("/fhir/Binary")) is None
    assert createpath.takes({**scope("/fhir/Observation"), "method": "PUT"}) is None


def test_a_site_caller_is_labelled_and_refused_alike(secure_server: Any, unique: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(secure_server.database.engine)
    token_url = secure_server.root + "/auth/token"
    site_a, site_b = f"A{unique}", f"B{unique}"
    a = make_client(store, token_url, role="site", site=site_a, scope="system/*.cruds").http(secure_server.base)
    b = make_client(store, token_url, role="site", site=site_b, scope="system/*.cruds").http(secure_server.base)
    reader = make_client(store, token_url, role="analyst", scope="system/*.rs").http(secure_server.base)
    with a, b, reader:
        fast, routed = both_ways(monkeypatch, createpath, lambda: b.post("/Observation", json=observation(unique)))
        assert fast.status_code == 201 and answer(fast) == answer(routed)
        assert fast.json()["meta"]["security"][0] == {"system": SITE, "code": site_b}
        ids = [r.json()["id"] for r in (fast, routed)]
        assert stored(secure_server.database, ids[0]) == stored(secure_server.database, ids[1])
        before = secure_server.database.counts()
        # another site's label, a reference to another site's resource, no create scope, no token
        foreign = observation(unique, meta={"security": [{"system": SITE, "code": site_a}]})
        fast, routed = both_ways(monkeypatch, createpath, lambda: b.post("/Observation", json=foreign))
        assert fast.status_code in range(400, 500) and answer(fast) == answer(routed)
        pointing = observation(unique, hasMember=[{"reference": f"Observation/{ids[0]}"}])
        fast, routed = both_ways(monkeypatch, createpath, lambda: a.post("/Observation", json=pointing))
        assert fast.status_code in range(400, 500) and answer(fast) == answer(routed)
        fast, routed = both_ways(monkeypatch, createpath, lambda: reader.post("/Observation", json=observation(unique)))
        assert fast.status_code == 403 and answer(fast) == answer(routed)
        anonymous = both_ways(monkeypatch, createpath, lambda: httpx.post(f"{secure_server.base}/Observation",
                                                                 json=observation(unique)), fast_taken=False)
        assert anonymous[0].status_code == 401 and answer(anonymous[0]) == answer(anonymous[1])
        assert secure_server.database.counts() == before
