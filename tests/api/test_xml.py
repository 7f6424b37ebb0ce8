"""FHIR XML in and out: every official R4 example survives JSON → XML → JSON unchanged, and over
HTTP on both databases XML is read and written for resources, Bundles, operations and errors,
with hostile XML refused as 400."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
from lxml import etree

from fhirfus.errors import FhirError
from fhirfus.fhir.xml import FHIR_NS, from_xml, to_xml

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
EXAMPLES = sorted((SHARED / "fhir-r4-examples").glob("*/*.json"))
XML = {"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"}


def _canonical(value: object, key: str = "") -> object:
    """The narrative ``div`` compared as canonical XML (attribute quotes, namespace placement)."""
    if isinstance(value, dict):
        return {k: _canonical(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if key == "div" and isinstance(value, str):
        return etree.tostring(etree.fromstring(value.encode()), method="c14n")
    return value


@pytest.mark.skipif(not EXAMPLES, reason=f"official R4 examples absent ({SHARED})")
def test_every_official_example_round_trips_through_xml() -> None:
    checked, exact, failures = 0, 0, []
    for path in EXAMPLES:
        try:
            resource = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(resource, dict) or "resourceType" not in resource:
            continue
        checked += 1
        back = from_xml(to_xml(resource))
        exact += back == resource
        if _canonical(back) != _canonical(resource):
            failures.append(path.name)
    print(f"\n{checked} official examples: {checked - len(failures)} round-trip, {exact} byte-for-byte equal JSON")
    assert checked > 200 and not failures, failures


def test_xml_is_written_in_definition_order_with_primitive_extensions_and_ids() -> None:
    patient = {"resourceType": "Patient", "id": "p", "gender": "male", "active": True,
               "name": [{"id": "n1", "given": ["A", "B"], "_given": [None, {"extension": [
                   {"url": "http://example.org/x", "valueInteger": 3}]}], "family": "F"}],
               "multipleBirthInteger": 2}
    root = etree.fromstring(to_xml(patient))
    assert [etree.QName(c).localname for c in root] == ["id", "active", "name", "gender", "multipleBirthInteger"]
    name = root.find(f"{{{FHIR_NS}}}name")
    assert name is not None and name.get("id") == "n1"
    assert [etree.QName(c).localname for c in name] == ["family", "given", "given"]
    assert from_xml(to_xml(patient)) == patient


@pytest.mark.parametrize(("body", "element"), [
    (b"<Patient xmlns='http://hl7.org/fhir'><banana value='1'/></Patient>", "Patient.banana"),
    (b"<Patient xmlns='urn:other'/>", "resourceType"),
    (b"<Patient xmlns='http://hl7.org/fhir'><active value='yes'/></Patient>", "Patient.active"),
    (b"<Patient xmlns='http://hl7.org/fhir'><gender value='male'/><gender value='female'/></Patient>",
     "Patient.gender"),
    (b"<Banana xmlns='http://hl7.org/fhir'/>", "resourceType"),
    (b"<Patient xmlns='http://hl7.org/fhir'><active/></Patient>", "Patient.active"),
    (b"<Patient xmlns='http://hl7.org/fhir'", "body"),
    (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><Patient xmlns='http://hl7.org/fhir'/>", "body"),
])
def test_bad_xml_is_refused_naming_the_element(body: bytes, element: str) -> None:
    with pytest.raises(FhirError) as caught:
        from_xml(body)
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == (element,)


def test_create_read_search_and_errors_in_xml(client: httpx.Client) -> None:
    family = f"Xml{uuid.uuid4().hex[:8]}"
    body = to_xml({"resourceType": "Patient", "name": [{"family": family}], "gender": "female"})
    created = client.post("/Patient", content=body, headers=XML)
    assert created.status_code == 201, created.text
    assert created.headers["content-type"].startswith("application/fhir+xml")
    stored = from_xml(created.content)
    assert stored["name"][0]["family"] == family and stored["meta"]["versionId"] == "1"
    as_json = client.get(f"/Patient/{stored['id']}").json()
    assert as_json["gender"] == "female"
    assert from_xml(client.get(f"/Patient/{stored['id']}", params={"_format": "xml"}).content) == as_json
    bundle = from_xml(client.get("/Patient", params={"family": family}, headers={"Accept": "application/fhir+xml"}).content)
    assert bundle["resourceType"] == "Bundle" and bundle["entry"][0]["resource"]["id"] == stored["id"]
    missing = client.get(f"/Patient/{uuid.uuid4()}", headers={"Accept": "application/fhir+xml"})
    assert missing.status_code == 404 and from_xml(missing.content)["resourceType"] == "OperationOutcome"
    bad = client.post("/Patient", content=b"<Patient xmlns='http://hl7.org/fhir'><banana value='1'/></Patient>",
                      headers=XML)
    assert bad.status_code == 400 and from_xml(bad.content)["issue"][0]["expression"] == ["Patient.banana"]


def test_a_transaction_in_xml(client: httpx.Client) -> None:
    urn = f"urn:uuid:{uuid.uuid4()}"
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": urn, "resource": {"resourceType": "Patient", "active": True},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": urn}}, "request": {"method": "POST", "url": "Observation"}}]}
    answer = client.post("", content=to_xml(transaction), headers=XML)
    assert answer.status_code == 200, answer.text
    response = from_xml(answer.content)
    assert response["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in response["entry"]] == ["201", "201"]


def test_metadata_and_operations_answer_xml(client: httpx.Client) -> None:
    statement = from_xml(client.get("/metadata", params={"_format": "xml"}).content)
    assert "application/fhir+xml" in statement["format"]
    expanded = client.get("/ValueSet/$expand", params={"url": "https://fhirfus.org/fhir/ValueSet/mrgfus-target"},
                          headers={"Accept": "application/fhir+xml"})
    assert from_xml(expanded.content)["expansion"]["total"] == 4
