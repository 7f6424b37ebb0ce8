"""The terminology operations over HTTP on both databases, with a real client (fhirpy) where one
fits: the guide's value sets expanded, codes looked up and validated, subtypes translated to
ICD-10, code systems stored on the server used like the guide's, and every bad input a 4xx."""

from __future__ import annotations

import httpx
import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound

TARGET_VS = "https://fhirfus.org/fhir/ValueSet/mrgfus-target"
TARGET_CS = "https://fhirfus.org/fhir/CodeSystem/mrgfus-target"
SUBTYPE_CS = "https://fhirfus.org/fhir/CodeSystem/cd-subtype"
SUBTYPE_TO_ICD10 = "https://fhirfus.org/fhir/ConceptMap/cd-subtype-to-icd10"


@pytest.fixture
def fhir(server) -> SyncFHIRClient:
    return SyncFHIRClient(server.base)


def parameter(parameters: dict, name: str) -> dict:
    return next(p for p in parameters["parameter"] if p["name"] == name)


def test_a_client_expands_the_target_value_set(fhir: SyncFHIRClient) -> None:
    expanded = fhir.execute("ValueSet/$expand", method="get", params={"url": TARGET_VS})
    contains = expanded["expansion"]["contains"]
    assert expanded["resourceType"] == "ValueSet" and expanded["expansion"]["total"] == len(contains) == 4
    assert all(c["system"] == TARGET_CS and c["display"] for c in contains)
    assert {c["code"] for c in contains} == {"pallidothalamic-tract", "vo-complex", "vim", "gpi"}


def test_expand_filters_and_pages(client: httpx.Client) -> None:
    every = client.get("/ValueSet/$expand", params={"url": TARGET_VS}).json()["expansion"]["contains"]
    word = every[0]["display"].split()[0]
    filtered = client.get("/ValueSet/$expand", params={"url": TARGET_VS, "filter": word.lower()}).json()["expansion"]
    assert filtered["total"] >= 1 and all(word.lower() in (c["code"] + " " + c["display"]).lower()
                                          for c in filtered["contains"])
    page = client.get("/ValueSet/$expand", params={"url": TARGET_VS, "count": 2, "offset": 1}).json()["expansion"]
    assert page["total"] == 4 and page["offset"] == 1 and page["contains"] == every[1:3]


def test_expand_by_post_with_parameters_and_an_inline_value_set(client: httpx.Client) -> None:
    inline = {"resourceType": "ValueSet", "url": "urn:test:inline-vs", "status": "active",
              "compose": {"include": [{"system": TARGET_CS, "concept": [{"code": "vo-complex"}]}]}}
    body = {"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": inline}]}
    answer = client.post("/ValueSet/$expand", json=body)
    assert answer.status_code == 200, answer.text
    [concept] = answer.json()["expansion"]["contains"]
    assert concept == {"system": TARGET_CS, "code": "vo-complex", "display": "Thalamic ventral oral (Vo) complex"}


def test_an_r4_value_set_of_a_required_binding_expands(client: httpx.Client) -> None:
    answer = client.get("/ValueSet/$expand", params={"url": "http://hl7.org/fhir/ValueSet/administrative-gender"})
    assert answer.status_code == 200
    assert {c["code"] for c in answer.json()["expansion"]["contains"]} == {"male", "female", "other", "unknown"}


def test_validate_code_tells_a_wrong_code_from_a_right_one(fhir: SyncFHIRClient) -> None:
    wrong = fhir.execute("ValueSet/$validate-code", method="get",
                         params={"url": TARGET_VS, "system": TARGET_CS, "code": "thalamus"})
    assert parameter(wrong, "result")["valueBoolean"] is False
    assert "thalamus" in parameter(wrong, "message")["valueString"]
    right = fhir.execute("ValueSet/$validate-code", method="get",
                         params={"url": TARGET_VS, "system": TARGET_CS, "code": "pallidothalamic-tract"})
    assert parameter(right, "result")["valueBoolean"] is True
    in_system = fhir.execute("CodeSystem/$validate-code", method="get", params={"url": TARGET_CS, "code": "GPi"})  # codes are case-sensitive
    assert parameter(in_system, "result")["valueBoolean"] is False


def test_a_wrong_display_is_reported(client: httpx.Client) -> None:
    answer = client.get("/CodeSystem/$validate-code",
                        params={"url": SUBTYPE_CS, "code": "laterocollis", "display": "Torticollis"}).json()
    assert parameter(answer, "result")["valueBoolean"] is False
    assert parameter(answer, "display")["valueString"] == "Laterocollis"


def test_lookup_gives_the_display_and_definition(fhir: SyncFHIRClient) -> None:
    found = fhir.execute("CodeSystem/$lookup", method="get", params={"system": SUBTYPE_CS, "code": "retrocollis"})
    assert parameter(found, "display")["valueString"] == "Retrocollis"
    assert parameter(found, "name")["valueString"] == "CervicalDystoniaSubtype"
    assert "backward" in parameter(found, "definition")["valueString"]


def test_translate_a_subtype_to_icd10(fhir: SyncFHIRClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": SUBTYPE_TO_ICD10},
        {"name": "coding", "valueCoding": {"system": SUBTYPE_CS, "code": "laterocollis"}}]}
    answer = fhir.execute("ConceptMap/$translate", method="post", data=body)
    assert parameter(answer, "result")["valueBoolean"] is True
    match = parameter(answer, "match")
    parts = {p["name"]: p for p in match["part"]}
    assert parts["concept"]["valueCoding"]["code"] == "G24.3"
    assert parts["concept"]["valueCoding"]["system"] == "http://hl7.org/fhir/sid/icd-10"
    assert parts["equivalence"]["valueCode"] == "wider"


def test_translate_without_a_url_finds_the_map_by_system_and_reverses(client: httpx.Client) -> None:
    forward = client.get("/ConceptMap/$translate", params={
        "system": SUBTYPE_CS, "code": "anterocollis", "targetsystem": "http://hl7.org/fhir/sid/icd-10"}).json()
    assert parameter(forward, "result")["valueBoolean"] is True
    back = client.get("/ConceptMap/$translate", params={
        "url": SUBTYPE_TO_ICD10, "system": "http://hl7.org/fhir/sid/icd-10", "code": "G24.3", "reverse": "true"}).json()
    codes = {p["valueCoding"]["code"] for m in back["parameter"] if m["name"] == "match"
             for p in m["part"] if p["name"] == "concept"}
    assert {"laterocollis", "anterocollis", "retrocollis"} <= codes


def test_a_code_system_stored_on_the_server_serves_lookup_subsumes_and_expand(client: httpx.Client, unique: str) -> None:
    url = f"urn:test:hierarchy:{unique}"
    codesystem = {"resourceType": "CodeSystem", "url": url, "status": "active", "content": "complete",
                  "name": "Movement", "hierarchyMeaning": "is-a", "concept": [
                      {"code": "dystonia", "display": "Dystonia", "concept": [
                          {"code": "cervical", "display": "Cervical dystonia",
                           "designation": [{"language": "de", "value": "Zervikale Dystonie"}]}]},
                      {"code": "tremor", "display": "Tremor"}]}
    assert client.post("/CodeSystem", json=codesystem).status_code == 201
    valueset = {"resourceType": "ValueSet", "url": f"{url}/vs", "status": "active",
                "compose": {"include": [{"system": url}]}}
    stored_vs = client.post("/ValueSet", json=valueset).json()

    def subsumes(a: str, b: str) -> str:
        answer = client.get("/CodeSystem/$subsumes", params={"system": url, "codeA": a, "codeB": b})
        assert answer.status_code == 200, answer.text
        return parameter(answer.json(), "outcome")["valueCode"]

    assert subsumes("dystonia", "cervical") == "subsumes"
    assert subsumes("cervical", "dystonia") == "subsumed-by"
    assert subsumes("cervical", "cervical") == "equivalent"
    assert subsumes("tremor", "cervical") == "not-subsumed"
    found = client.get("/CodeSystem/$lookup", params={"system": url, "code": "cervical"}).json()
    assert {"name": "property", "part": [{"name": "code", "valueCode": "parent"},
                                         {"name": "value", "valueCode": "dystonia"}]} in found["parameter"]
    german = client.get(f"/ValueSet/{stored_vs['id']}/$expand", params={"displayLanguage": "de"}).json()
    assert {c["code"]: c.get("display") for c in german["expansion"]["contains"]}["cervical"] == "Zervikale Dystonie"


def test_terminology_capabilities(client: httpx.Client) -> None:
    answer = client.get("/metadata", params={"mode": "terminology"})
    assert answer.status_code == 200
    statement = answer.json()
    assert statement["resourceType"] == "TerminologyCapabilities"
    assert TARGET_CS in {c["uri"] for c in statement["codeSystem"]}
    assert client.get("/metadata", params={"mode": "banana"}).status_code == 400


@pytest.mark.parametrize(("path", "params", "status", "element"), [
    ("/ValueSet/$expand", {}, 400, "url"),
    ("/ValueSet/$expand", {"url": "urn:nothing"}, 404, "url"),
    ("/ValueSet/$expand", {"url": TARGET_VS, "count": "many"}, 400, "count"),
    ("/ValueSet/$expand", {"url": TARGET_VS, "offset": "-1"}, 400, "offset"),
    ("/ValueSet/$expand", {"url": "http://hl7.org/fhir/ValueSet/observation-codes"}, 404, "url"),
    ("/ValueSet/$validate-code", {"url": TARGET_VS}, 400, "code"),
    ("/CodeSystem/$lookup", {"system": SUBTYPE_CS}, 400, "code"),
    ("/CodeSystem/$lookup", {"system": SUBTYPE_CS, "code": "nope"}, 404, "code"),
    ("/CodeSystem/$lookup", {"system": "urn:nothing", "code": "x"}, 404, "system"),
    ("/CodeSystem/$subsumes", {"system": SUBTYPE_CS, "codeA": "laterocollis"}, 400, "codeA"),
    ("/ConceptMap/$translate", {"url": "urn:nothing", "system": SUBTYPE_CS, "code": "x"}, 404, "url"),
    ("/ValueSet/does-not-exist/$expand", {}, 404, None),
])
def test_bad_terminology_requests_are_4xx_naming_the_parameter(
    client: httpx.Client, path: str, params: dict, status: int, element: str | None,
) -> None:
    answer = client.get(path, params=params)
    assert answer.status_code == status, answer.text
    issue = answer.json()["issue"][0]
    if element:
        assert issue["expression"] == [element]


@pytest.mark.parametrize("body", [
    [], {"resourceType": "Patient"}, {"resourceType": "Parameters", "parameter": [{"valueString": "x"}]},
    {"resourceType": "Parameters", "parameter": [{"name": "url"}]},
    {"resourceType": "Parameters", "parameter": [{"name": "valueSet", "valueString": "x"}]},
])
def test_bad_parameters_bodies_are_400(client: httpx.Client, body: object) -> None:
    answer = client.post("/ValueSet/$expand", json=body)
    assert answer.status_code == 400, answer.text


def test_a_client_sees_an_unknown_code_as_not_found_with_an_operation_outcome(fhir: SyncFHIRClient) -> None:
    with pytest.raises(ResourceNotFound, match="is not a code of"):
        fhir.execute("CodeSystem/$lookup", method="get", params={"system": SUBTYPE_CS, "code": "nope"})
