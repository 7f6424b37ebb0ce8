"""Content negotiation: JSON flavours, _format, _pretty, 406 for what fhirfus cannot produce."""

from __future__ import annotations

import httpx


def test_default_content_type_is_fhir_json(client: httpx.Client) -> None:
    response = client.get("/metadata")
    assert response.headers["Content-Type"] == "application/fhir+json; charset=utf-8"


def test_accept_application_json_is_honoured(client: httpx.Client) -> None:
    response = client.get("/metadata", headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")


def test_browser_accept_header_gets_json(client: httpx.Client) -> None:
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    assert client.get("/metadata", headers={"Accept": accept}).status_code == 200


def test_accept_xml_only_answers_xml(client: httpx.Client) -> None:
    response = client.get("/metadata", headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+xml")


def test_accept_of_nothing_fhirfus_writes_is_406(client: httpx.Client) -> None:
    response = client.get("/metadata", headers={"Accept": "image/png"})
    assert response.status_code == 406
    assert response.json()["resourceType"] == "OperationOutcome"


def test_format_json_overrides_accept(client: httpx.Client) -> None:
    response = client.get("/metadata", params={"_format": "json"}, headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 200


def test_format_xml_answers_xml_and_an_unknown_format_is_406(client: httpx.Client) -> None:
    assert client.get("/metadata", params={"_format": "xml"}).headers["content-type"].startswith("application/fhir+xml")
    assert client.get("/metadata", params={"_format": "turtle"}).status_code == 406


def test_pretty_output_is_indented(client: httpx.Client) -> None:
    compact = client.get("/metadata")
    pretty = client.get("/metadata", params={"_pretty": "true"})
    assert b"\n" not in compact.content
    assert b'\n  "resourceType"' in pretty.content


def test_plain_json_body_is_accepted(client: httpx.Client, unique: str) -> None:
    response = client.post(
        "/Patient", content=b'{"resourceType": "Patient"}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201
