"""Type searches ahead of routing (``api/searchpath.py``): for the same searches, the same status,
headers and Bundle as the route; bad parameters refused alike; another site's caller confined
alike; and only the requests the router would give the search route."""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import httpx
import pytest
from auth_helpers import make_client
from fast_paths import answer, both_ways, counted

from fhirfus.api import searchpath
from fhirfus.api.app import create_app
from fhirfus.settings import Settings
from tests.api.test_createpath import observation


def _searches(unique: str) -> list[tuple[str, dict[str, str]]]:
    code = f"createpath-{unique}"
    return [
        ("/Observation", {"code:text": code}),
        ("/Observation", {"code:text": code, "value-quantity": "gt1", "_count": "1"}),  # paged: next link
        ("/Observation", {"code:text": code, "_summary": "count"}),
        ("/Observation", {"code:text": code, "_format": "xml"}),
        ("/Observation", {"code:text": code, "_elements": "status", "_sort": "-_lastUpdated"}),
        ("/Patient", {"_id": "none-" + unique}),
    ]


BAD = [
    ("/Observation", {"unknown-parameter": "x"}, {"Prefer": "handling=strict"}),
    ("/Observation", {"date": "not-a-date"}, {}),
    ("/Observation", {"_count": "-1"}, {}),
    ("/Observation", {"value-quantity": "gtx"}, {}),
    ("/Observation", {"_sort": "no-such-parameter"}, {}),
]


def test_a_search_answers_as_the_route(client: httpx.Client, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for value in (2.5, 3.5):
        body = observation(unique)
        body["valueQuantity"]["value"] = value
        assert client.post("/Observation", json=body).status_code == 201
    for path, params in _searches(unique):
        fast, routed = both_ways(monkeypatch, searchpath, partial(client.get, path, params=params))
        assert fast.status_code == 200, (path, params, fast.text)
        assert answer(fast) == answer(routed), (path, params)


@pytest.mark.parametrize(("path", "params", "headers"), BAD)
def test_bad_parameters_are_the_same_4xx_outcome(client: httpx.Client, path: str, params: dict[str, str],
                                                 headers: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    fast, routed = both_ways(monkeypatch, searchpath, lambda: client.get(path, params=params, headers=headers))
    assert fast.status_code in range(400, 500), fast.text
    assert fast.json()["resourceType"] == "OperationOutcome"
    assert answer(fast) == answer(routed)


def test_other_requests_go_to_the_router(client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    with counted(monkeypatch, searchpath, True) as taken:
        metadata = client.get("/metadata")
        history = client.get("/_history", params={"_count": "1"})
        unknown = client.get("/Observatio")
        post = client.post("/Observation/_search", data={"_count": "1"})
    assert taken == []
    assert (metadata.status_code, history.status_code, post.status_code) == (200, 200, 200)
    assert unknown.status_code == 404 and unknown.json()["resourceType"] == "OperationOutcome"


def test_the_fast_path_takes_exactly_what_the_router_gives_the_search_route(database: Any) -> None:
    app = create_app(Settings(database_url=database.url, auth="off"))
    others = [route.path for included in app.routes
              for route in getattr(getattr(included, "original_router", None), "routes", ())
              if route.path.startswith("/fhir/") and "GET" in (getattr(route, "methods", ()) or ())
              and route.endpoint.__name__ != "search_type"]
    assert "/fhir/metadata" in others

    def scope(path: str, method: str = "GET") -> dict:
        return {"type": "http", "method": method, "path": path, "query_string": b"", "headers": []}

    for template in others:
        path = re.sub(r"\{[^}]+\}", "Observation", template)
        assert searchpath.takes(scope(path)) is None, path
    assert searchpath.takes(scope("/fhir/Observation")) == "Observation"
    assert searchpath.takes(scope("/fhir/Observation/")) is None
    assert searchpath.takes(scope("/fhir/Observation", "HEAD")) is None
    assert searchpath.takes({**scope("/fhir/Observation"), "type": "websocket"}) is None


def test_a_site_caller_sees_its_own_alike(secure_server: Any, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from fhirfus.store.repository import Store

    store = Store(secure_server.database.engine)
    token_url = secure_server.root + "/auth/token"
    a = make_client(store, token_url, role="site", site=f"A{unique}", scope="system/*.cruds").http(secure_server.base)
    b = make_client(store, token_url, role="site", site=f"B{unique}", scope="system/*.cruds").http(secure_server.base)
    with a, b:
        assert a.post("/Observation", json=observation(unique)).status_code == 201
        params = {"code:text": f"createpath-{unique}"}
        for caller, expected in ((a, 1), (b, 0)):
            fast, routed = both_ways(monkeypatch, searchpath, partial(caller.get, "/Observation", params=params))
            assert fast.status_code == 200 and fast.json()["total"] == expected
            assert answer(fast) == answer(routed)
        anonymous = both_ways(monkeypatch, searchpath, lambda: httpx.get(f"{secure_server.base}/Observation", params=params),
                              fast_taken=False)
        assert anonymous[0].status_code == 401 and answer(anonymous[0]) == answer(anonymous[1])
