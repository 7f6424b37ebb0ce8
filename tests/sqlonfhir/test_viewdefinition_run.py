"""SQL on FHIR ``$viewdefinition-run`` over the server's data, on both databases: inline and guide
ViewDefinitions, every output format, ``_limit``, ``_since``, ``patient`` and ``group``; a site
client sees its site's rows only, an analyst none of an inline view (it has no de-identification
rules: ``test_viewdefinition_policy``); bad input is a 400 naming the parameter."""

from __future__ import annotations

import csv
import io
import uuid

import httpx
import orjson
import pyarrow.parquet as pq
import pytest
from auth_helpers import make_client

from fhirfus.store.repository import Store


def view(*columns: tuple[str, str], resource: str = "Patient", where: str | None = None) -> dict:
    body: dict = {"resourceType": "ViewDefinition", "resource": resource, "status": "active",
                  "select": [{"column": [{"name": n, "path": p} for n, p in columns]}]}
    if where:
        body["where"] = [{"path": where}]
    return body


def run(client: httpx.Client, definition: dict, path: str = "/$viewdefinition-run", **params: object) -> httpx.Response:
    parameters = [{"name": "viewResource", "resource": definition}]
    for name, value in params.items():
        for one in value if isinstance(value, list) else [value]:
            key = "valueInteger" if isinstance(one, int) else "valueString"
            parameters.append({"name": name, key: one})
    return client.post(path, json={"resourceType": "Parameters", "parameter": parameters})


@pytest.fixture
def family(client: httpx.Client) -> str:
    name = f"View{uuid.uuid4().hex[:8]}"
    for gender in ("female", "male", "female"):
        client.post("/Patient", json={"resourceType": "Patient", "gender": gender, "name": [{"family": name}]})
    return name


def mine(family: str) -> dict:
    return view(("id", "id"), ("gender", "gender"), ("family", "name.family.first()"),
                where=f"name.family.first() = '{family}'")


def test_ndjson_rows_of_an_inline_view(client: httpx.Client, family: str) -> None:
    answer = run(client, mine(family))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    rows = [orjson.loads(line) for line in answer.content.splitlines()]
    assert sorted(r["gender"] for r in rows) == ["female", "female", "male"]
    assert {r["family"] for r in rows} == {family}


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "text/csv"])
def test_every_format(client: httpx.Client, family: str, fmt: str) -> None:
    answer = run(client, mine(family), _format=fmt)
    assert answer.status_code == 200, answer.text
    if fmt in ("csv", "text/csv"):
        table = list(csv.reader(io.StringIO(answer.text)))
        assert table[0] == ["id", "gender", "family"] and len(table) == 4
    elif fmt == "json":
        assert len(answer.json()) == 3
    else:
        table = pq.read_table(io.BytesIO(answer.content))
        assert table.num_rows == 3 and table.column_names == ["id", "gender", "family"]


def test_csv_without_header_and_limit(client: httpx.Client, family: str) -> None:
    answer = run(client, mine(family), _format="csv", header="false", _limit=2)
    assert len(list(csv.reader(io.StringIO(answer.text)))) == 2


def test_since_keeps_only_recent_changes(client: httpx.Client, family: str) -> None:
    assert run(client, mine(family), _since="2999-01-01T00:00:00Z").content == b""
    assert len(run(client, mine(family), _since="2000-01-01T00:00:00Z").content.splitlines()) == 3


def test_patient_and_group_keep_those_patients_compartments(client: httpx.Client) -> None:
    first = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    second = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    marker = uuid.uuid4().hex
    for pid in (first, second):
        client.post("/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": marker},
                                          "subject": {"reference": f"Patient/{pid}"}})
    observations = view(("subject", "subject.reference"), resource="Observation", where=f"code.text = '{marker}'")
    only_first = run(client, observations, patient=first)
    assert [orjson.loads(line)["subject"] for line in only_first.content.splitlines()] == [f"Patient/{first}"]
    group = client.post("/Group", json={"resourceType": "Group", "type": "person", "actual": True,
                                        "member": [{"entity": {"reference": f"Patient/{second}"}}]}).json()["id"]
    in_group = run(client, observations, group=group)
    assert [orjson.loads(line)["subject"] for line in in_group.content.splitlines()] == [f"Patient/{second}"]
    both = run(client, observations, patient=[first, f"Patient/{second}"])
    assert len(both.content.splitlines()) == 2


def test_a_guide_view_by_name_and_the_earlier_route(client: httpx.Client) -> None:
    by_reference = client.post("/$viewdefinition-run", json={"resourceType": "Parameters", "parameter": [
        {"name": "viewReference", "valueReference": {"reference": "ViewDefinition/analysis_patient"}},
        {"name": "_limit", "valueInteger": 1}]})
    assert by_reference.status_code == 200, by_reference.text
    instance = client.get("/ViewDefinition/analysis_patient/$run", params={"_limit": 1, "_format": "json"})
    assert instance.status_code == 200 and len(instance.json()) <= 1
    assert client.get("/ViewDefinition/nothing/$run").status_code == 404


@pytest.mark.parametrize(("params", "element"), [
    ({}, "viewResource"),
    ({"_format": "xml"}, "_format"),
    ({"_limit": "0"}, "_limit"),
    ({"_limit": "many"}, "_limit"),
    ({"_since": "yesterday"}, "_since"),
    ({"header": "maybe", "_format": "csv"}, "header"),
    ({"patient": "Observation/1"}, "patient"),
])
def test_bad_input_is_400_naming_the_parameter(client: httpx.Client, params: dict, element: str) -> None:
    definition = view(("id", "id"))
    answer = client.get("/$viewdefinition-run", params=params) if not params or element == "viewResource" \
        else run(client, definition, **params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["issue"][0]["expression"] == [element]


@pytest.mark.parametrize("definition", [
    {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active", "select": []},
    {"resourceType": "ViewDefinition", "resource": "Banana", "status": "active",
     "select": [{"column": [{"name": "id", "path": "id"}]}]},
    {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
     "select": [{"column": [{"name": "x", "path": "name.("}]}]},
    {"resourceType": "Patient"},
])
def test_an_invalid_view_is_400(client: httpx.Client, definition: dict) -> None:
    assert run(client, definition).status_code == 400


def test_a_site_client_sees_only_its_rows_and_an_analyst_none(secure_server) -> None:
    store = Store(secure_server.database.engine)
    token = secure_server.root + "/auth/token"
    suffix = uuid.uuid4().hex[:8]
    a = make_client(store, token, role="site", site=f"VA{suffix}", scope="system/*.cruds")
    b = make_client(store, token, role="site", site=f"VB{suffix}", scope="system/*.cruds")
    analyst = make_client(store, token, role="analyst", scope="system/*.rs")
    family = f"Sites{suffix}"
    with a.http(secure_server.base) as on_a, b.http(secure_server.base) as on_b, \
            analyst.http(secure_server.base) as on_analyst:
        on_a.post("/Patient", json={"resourceType": "Patient", "name": [{"family": family}]})
        on_b.post("/Patient", json={"resourceType": "Patient", "name": [{"family": family}]})
        definition = view(("id", "id"), where=f"name.family.first() = '{family}'")
        assert len(run(on_a, definition).content.splitlines()) == 1
        assert len(run(on_b, definition).content.splitlines()) == 1
        refused = run(on_analyst, definition)
        assert refused.status_code == 422 and "has no rule" in refused.text
