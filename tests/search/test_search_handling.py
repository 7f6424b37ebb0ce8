"""Unknown, unsupported and malformed search parameters, conditional create, and what real
clients send (fhir-pyrate, fhirpy), over HTTP on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from fhirpy import SyncFHIRClient
from search_data import (
    DATES,
    LOINC,
    RUN_TAG,
    TAG_SYSTEM,
    Dataset,
    compare_dates,
    date_range,
    ids,
    link,
    load,
    query_of,
    search,
)

STRICT = {"Prefer": "handling=strict"}


@pytest.fixture
def data(server) -> Dataset:
    return load(server)


def outcome_expressions(response: httpx.Response) -> list[str]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return [e for issue in body["issue"] for e in issue.get("expression", [])]


UNKNOWN = [
    pytest.param("Patient", "banana", "yellow", id="unknown-name"),
    pytest.param("Patient", "_text", "cough", id="unsupported-standard-parameter"),
    pytest.param("Patient", "family:banana", "x", id="unknown-modifier"),
    pytest.param("Observation", "code:below", f"{LOINC}|8867-4", id="token-below"),
    pytest.param("Observation", "code:above", f"{LOINC}|8867-4", id="token-above"),
    pytest.param("Observation", "subject.banana", "x", id="chain-to-unknown-parameter"),
    pytest.param("Patient", "_has:Observation:patient:banana", "x", id="has-with-unknown-parameter"),
]


@pytest.mark.parametrize(("res_type", "name", "value"), UNKNOWN)
def test_unknown_or_unsupported_parameter_is_ignored_and_left_out_of_the_self_link(
    client: httpx.Client, data: Dataset, res_type: str, name: str, value: str
) -> None:
    result = search(client, f"/{res_type}", [("_tag", RUN_TAG), (name, value), ("_count", "300")])
    assert len(result.ids()) == len(data.of(res_type))
    assert name not in dict(query_of(link(result.pages[0], "self")))


@pytest.mark.parametrize(("res_type", "name", "value"), UNKNOWN)
def test_unknown_or_unsupported_parameter_under_strict_handling_is_400_naming_it(
    client: httpx.Client, res_type: str, name: str, value: str
) -> None:
    response = client.get(f"/{res_type}", params={"_tag": RUN_TAG, name: value}, headers=STRICT)
    assert response.status_code == 400
    assert name in outcome_expressions(response)


def test_strict_handling_accepts_known_parameters(client: httpx.Client, data: Dataset) -> None:
    result = search(client, "/Patient", [("_tag", RUN_TAG), ("gender", "female"), ("_count", "300")], headers=STRICT)
    assert set(result.ids()) == ids(data.of("Patient"), lambda p: p.get("gender") == "female")


def test_strict_handling_applies_to_post_search_and_system_search(client: httpx.Client) -> None:
    response = client.post("/Patient/_search", data={"banana": "1"}, headers=STRICT)
    assert response.status_code == 400 and "banana" in outcome_expressions(response)
    response = client.get("/", params={"_type": "Patient", "banana": "1"}, headers=STRICT)
    assert response.status_code == 400 and "banana" in outcome_expressions(response)
    response = client.get("/", params={"family": "x"}, headers=STRICT)
    assert response.status_code == 400 and "family" in outcome_expressions(response)


MALFORMED = [
    pytest.param("Patient", "birthdate", "banana", id="date"),
    pytest.param("Patient", "birthdate", "ge2021-13-01", id="date-out-of-range"),
    pytest.param("Patient", "_lastUpdated", "yesterday", id="lastUpdated"),
    pytest.param("Observation", "value-quantity", "abc", id="quantity"),
    pytest.param("Observation", "value-quantity", "5|a", id="quantity-with-two-parts"),
    pytest.param("RiskAssessment", "probability", "gtabc", id="number"),
    pytest.param("Patient", "_count", "-1", id="negative-count"),
    pytest.param("Patient", "_count", "ten", id="count-not-a-number"),
    pytest.param("Patient", "_summary", "banana", id="summary"),
    pytest.param("Patient", "_total", "banana", id="total"),
    pytest.param("Patient", "gender:missing", "maybe", id="missing-not-boolean"),
    pytest.param("Patient", "organization", "Organization/", id="reference"),
    pytest.param("Patient", "_include", "Patient", id="include"),
    pytest.param("Patient", "_include", "Patient:gender", id="include-not-a-reference"),
    pytest.param("Patient", "_revinclude", "Banana:subject", id="revinclude-unknown-type"),
    pytest.param("Patient", "_has:Observation", "x", id="has"),
    pytest.param("Patient", "_cursor", "not-a-cursor", id="cursor"),
]


@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
@pytest.mark.parametrize(("res_type", "name", "value"), MALFORMED)
def test_malformed_value_is_always_400_naming_the_parameter(
    client: httpx.Client, res_type: str, name: str, value: str, strict: bool
) -> None:
    response = client.get(f"/{res_type}", params={name: value}, headers=STRICT if strict else None)
    assert response.status_code == 400
    assert name in outcome_expressions(response)


def test_malformed_value_in_post_search_is_400(client: httpx.Client) -> None:
    response = client.post("/Patient/_search", data={"birthdate": "banana"})
    assert response.status_code == 400 and "birthdate" in outcome_expressions(response)


def test_unknown_type_in_system_search_is_404(client: httpx.Client) -> None:
    assert client.get("/", params={"_type": "Banana"}).status_code == 404


# --------------------------------------------------------------------------- conditional create


def _patient(system: str, value: str) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}],
            "meta": {"tag": [{"system": TAG_SYSTEM, "code": "conditional"}]}}


def test_if_none_exist_creates_when_nothing_matches(client: httpx.Client) -> None:
    system = f"urn:test:{uuid.uuid4().hex}"
    response = client.post("/Patient", json=_patient(system, "1"), headers={"If-None-Exist": f"identifier={system}|1"})
    assert response.status_code == 201


def test_if_none_exist_returns_the_existing_resource_with_200(client: httpx.Client) -> None:
    system = f"urn:test:{uuid.uuid4().hex}"
    created = client.post("/Patient", json=_patient(system, "1")).json()
    response = client.post("/Patient", json=_patient(system, "1"), headers={"If-None-Exist": f"identifier={system}|1"})
    assert response.status_code == 200
    assert response.json()["id"] == created["id"]
    page = client.get("/Patient", params={"identifier": f"{system}|1"}).json()
    assert page["total"] == 1


def test_if_none_exist_with_several_matches_is_412(client: httpx.Client) -> None:
    system = f"urn:test:{uuid.uuid4().hex}"
    for _ in range(2):
        assert client.post("/Patient", json=_patient(system, "1")).status_code == 201
    response = client.post("/Patient", json=_patient(system, "1"), headers={"If-None-Exist": f"identifier={system}|1"})
    assert response.status_code == 412
    assert client.get("/Patient", params={"identifier": f"{system}|1"}).json()["total"] == 2


def test_if_none_exist_with_unknown_parameter_is_400(client: httpx.Client) -> None:
    response = client.post("/Patient", json=_patient("urn:x", "1"), headers={"If-None-Exist": "banana=1"})
    assert response.status_code == 400


# --------------------------------------------------------------------------- clients


def test_fhir_pyrate_dates_with_minutes_and_no_zone(client: httpx.Client, data: Dataset) -> None:
    """fhir-pyrate sends ``ge2021-01-01T00:00``: a minute-precision dateTime without zone (taken as UTC)."""
    query = date_range("2021-01-01T00:00Z")
    expected = ids(data.of("Observation"), lambda r: any(compare_dates("ge", v, query) for v in DATES[("Observation", "date")](r)))
    result = search(client, "/Observation", [("_tag", RUN_TAG), ("date", "ge2021-01-01T00:00"), ("_count", "300")])
    assert set(result.ids()) == expected and 0 < len(expected) < len(data.of("Observation"))


def test_fhir_pyrate_reruns_a_multi_page_query_sorted_by_id_with_the_same_answer(client: httpx.Client, data: Dataset) -> None:
    params = [("_tag", RUN_TAG), ("date", "ge2021-01-01T00:00"), ("_sort", "_id"), ("_count", "11")]
    first, again = search(client, "/Observation", params), search(client, "/Observation", params)
    assert first.ids() == again.ids() == sorted(first.ids())
    assert len(first.pages) > 3


def test_fhirpy_count_uses_count_zero_and_total_method(server, data: Dataset) -> None:
    fhir = SyncFHIRClient(server.base)
    assert fhir.resources("Patient").search(_tag=RUN_TAG).count() == len(data.of("Patient"))
    assert fhir.resources("Patient").search(_tag=RUN_TAG, gender="female").count() == len(
        ids(data.of("Patient"), lambda p: p.get("gender") == "female")
    )


def test_fhirpy_fetch_all_follows_next_links(server, data: Dataset) -> None:
    fhir = SyncFHIRClient(server.base)
    fetched = fhir.resources("Observation").search(_tag=RUN_TAG, status="final").limit(13).fetch_all()
    assert sorted(r.id for r in fetched) == sorted(o["id"] for o in data.of("Observation") if o["status"] == "final")


def test_system_search_parameter_known_to_only_some_types_is_400(client: httpx.Client) -> None:
    """With ``_type=Patient,Organization``, ``family`` would otherwise be dropped for Organization and
    return every Organization."""
    response = client.get("/", params={"_type": "Patient,Organization", "family": "x"})
    assert response.status_code == 400 and "family" in outcome_expressions(response)


def test_system_search_parameter_unknown_to_every_type_is_ignored(client: httpx.Client, data: Dataset) -> None:
    result = search(client, "/", [("_type", "Patient,Organization"), ("_tag", RUN_TAG), ("banana", "1"), ("_count", "300")])
    assert len(result.ids()) == len(data.of("Patient")) + len(data.of("Organization"))


EDGES = [
    pytest.param("Patient", "birthdate", "ap0001", id="date-ap-at-the-start-of-time"),
    pytest.param("Patient", "birthdate", "ap9999", id="date-ap-at-the-end-of-time"),
    pytest.param("Patient", "_lastUpdated", "ap9999-12-31", id="lastUpdated-last-day"),
    pytest.param("Patient", "birthdate", "9999-12-31T23:59:59-14:00", id="date-beyond-the-end"),
    pytest.param("Observation", "value-quantity", "1e400", id="huge-quantity"),
    pytest.param("RiskAssessment", "probability", "1e-999999", id="tiny-number"),
    pytest.param("Patient", "name:exact", "a\x00b", id="nul-character"),
    pytest.param("Patient", "_cursor", "WyJuIixbeyJ0IjoiYmFkIn1dXQ", id="cursor-with-a-bad-date"),
    pytest.param("Patient", "_cursor", "WyJuIixbIngiXV0", id="cursor-with-a-text-key"),
    pytest.param("Patient", "name", "%_", id="like-wildcards"),
    pytest.param("ValueSet", "url:above", "%", id="uri-above-wildcard"),
]


@pytest.mark.parametrize(("res_type", "name", "value"), EDGES)
def test_edge_values_are_answered_or_refused_never_a_server_error(client: httpx.Client, res_type: str, name: str, value: str) -> None:
    response = client.get(f"/{res_type}", params={name: value, "_tag": RUN_TAG})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert outcome_expressions(response)


def test_date_at_the_end_of_time_can_be_stored_and_found(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    patient = {"resourceType": "Patient", "birthDate": "9999-12-31", "meta": {"tag": [{"system": TAG_SYSTEM, "code": marker}]}}
    assert client.post("/Patient", json=patient).status_code == 201
    page = client.get("/Patient", params={"_tag": f"{TAG_SYSTEM}|{marker}", "birthdate": "9999-12-31"}).json()
    assert page["total"] == 1


def test_system_search_self_link_keeps_type_and_drops_unknown_parameters(client: httpx.Client, data: Dataset) -> None:
    bundle = client.get("/", params={"_type": "Organization", "_tag": RUN_TAG, "banana": "1"}).json()
    kept = dict(query_of(link(bundle, "self")))
    assert kept == {"_type": "Organization", "_tag": RUN_TAG}
    assert bundle["total"] == len(data.of("Organization"))
