"""The R4 Bundle rules beyond the invariants, per Bundle type, for Bundles stored or validated."""

from __future__ import annotations

import httpx
import pytest

from fhirfus.fhir.bundle_rules import bundle_issues

PATIENT = {"resourceType": "Patient", "id": "p1"}


def bundle(kind: str, *entries: dict, **elements: object) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries), **elements}


def where(document: dict) -> list[tuple[str, ...]]:
    return [i.expression for i in bundle_issues(document)]


def test_a_well_formed_collection_passes() -> None:
    entries = [{"fullUrl": "https://ehr.example/fhir/Patient/p1", "resource": PATIENT},
               {"fullUrl": "urn:uuid:0b2b1c37-8c52-4c4e-9b15-27b1e4e3f3b1", "resource": {"resourceType": "Patient"}}]
    assert where(bundle("collection", *entries, link=[{"relation": "self", "url": "https://ehr.example/x"}])) == []


def test_any_absolute_uri_is_a_full_url() -> None:
    assert where(bundle("collection", {"fullUrl": "urn:isbn:0451450523", "resource": {"resourceType": "Binary", "contentType": "x"}})) == []


@pytest.mark.parametrize("full_url", ["Patient/p1", "p1", "urn:uuid:not-a-uuid", "urn:oid:1.x", "https://ehr.example/fhir/Patient/p2",
                                      "https://ehr.example/fhir/Observation/p1",
                                      "https://ehr.example/fhir/Patient/p1/_history/2"])
def test_full_url_is_absolute_and_names_the_entrys_resource(full_url: str) -> None:
    assert where(bundle("collection", {"fullUrl": full_url, "resource": PATIENT})) == [("Bundle.entry[0].fullUrl",)]


def test_full_urls_are_unique_except_for_different_versions_and_in_a_history() -> None:
    url = "https://ehr.example/fhir/Patient/p1"
    twice = [{"fullUrl": url, "resource": PATIENT}, {"fullUrl": url, "resource": PATIENT}]
    assert where(bundle("collection", *twice)) == [("Bundle.entry[1].fullUrl",)]
    versions = [{"fullUrl": url, "resource": {**PATIENT, "meta": {"versionId": v}}} for v in ("1", "2")]
    assert where(bundle("collection", *versions)) == []
    same = [{"fullUrl": url, "resource": {**PATIENT, "meta": {"versionId": "1"}}, "request": {"method": "PUT", "url": "Patient/p1"},
             "response": {"status": "200"}}] * 2
    assert where(bundle("history", *same)) == []


def test_self_link_at_most_once() -> None:
    links = [{"relation": "self", "url": "https://a"}, {"relation": "self", "url": "https://b"}]
    assert where(bundle("searchset", link=links)) == [("Bundle.link[1]",)]


@pytest.mark.parametrize(("kind", "entry", "at"), [
    ("transaction", {"resource": PATIENT}, "Bundle.entry[0].request"),
    ("batch", {"resource": PATIENT}, "Bundle.entry[0].request"),
    ("collection", {"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}}, "Bundle.entry[0].request"),
    ("transaction-response", {"resource": PATIENT}, "Bundle.entry[0].response"),
    ("searchset", {"resource": PATIENT, "response": {"status": "200"}}, "Bundle.entry[0].response"),
    ("collection", {"resource": PATIENT, "search": {"mode": "match"}}, "Bundle.entry[0].search"),
    ("collection", {"fullUrl": "urn:uuid:0b2b1c37-8c52-4c4e-9b15-27b1e4e3f3b1"}, "Bundle.entry[0]"),
])
def test_request_response_and_search_belong_to_their_bundle_types(kind: str, entry: dict, at: str) -> None:
    assert (at,) in where(bundle(kind, entry))


def test_total_only_in_searchset_or_history() -> None:
    assert where(bundle("collection", total=1)) == [("Bundle.total",)]
    assert where(bundle("searchset", total=0)) == []


def test_a_document_starts_with_its_composition_and_has_identifier_and_timestamp() -> None:
    composition = {"resourceType": "Composition", "status": "final", "type": {"text": "x"}, "date": "2024", "title": "t",
                   "author": [{"display": "a"}]}
    complete = {"identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:1"}, "timestamp": "2024-01-01T00:00:00Z"}
    assert where(bundle("document", {"resource": composition}, {"resource": PATIENT}, **complete)) == []
    assert where(bundle("document", {"resource": PATIENT}, {"resource": composition}, **complete)) == [
        ("Bundle.entry[0].resource",)]
    assert where(bundle("document", {"resource": composition})) == [("Bundle.identifier",), ("Bundle.timestamp",)]


def test_a_message_starts_with_its_message_header() -> None:
    assert where(bundle("message", {"resource": PATIENT})) == [("Bundle.entry[0].resource",)]


def test_a_stored_bundle_breaking_a_rule_is_refused(client: httpx.Client) -> None:
    document = bundle("collection", {"fullUrl": "Patient/p1", "resource": PATIENT})
    response = client.post("/Bundle", json=document)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[0].fullUrl"]
